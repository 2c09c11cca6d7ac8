"""Choosing which target and credential serve a request: the route's strategy, tiers and fallbacks.

`Selector.plan()` lists every (target, credential) the request may use, preferred first: the route's
targets by priority tier (lower first), each tier ordered by the route's strategy, then the tiers of each
fallback route. The shared limits (`routing/limits.py`) then take the first eligible one in that order
(`round_robin`, `weighted`, `latency`), or the best eligible one in the first tier that has any, judged
on state shared by all replicas (`least_inflight`: fewest in flight; `headroom`: most remaining provider
quota according to its last rate-limit headers).
"""

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass

from routing.snapshot import CredentialInfo, RouteInfo, Snapshot, TargetInfo

TIER_SPAN = 1_000_000  # fallback route n's tiers sort after every tier of the routes before it
MAX_FALLBACK_DEPTH = 4
LATENCY_ALPHA = 0.3  # weight of the newest time-to-first-byte sample in the moving average
LATENCY_STALE_SECONDS = 30.0  # an older average is re-measured, so a slow spell is not held forever

LIMIT_MODES = {"least_inflight": "least", "headroom": "headroom"}


@dataclass(frozen=True, slots=True)
class Candidate:
    route: RouteInfo  # the route whose target this is (the request's own, or a fallback)
    target: TargetInfo
    credential: CredentialInfo
    tier: int


def limit_mode(route: RouteInfo) -> str:
    """How the shared limits pick among eligible candidates for this route's strategy."""
    return LIMIT_MODES.get(route.strategy, "order")


def pin_matches(candidate: Candidate, pin: str) -> bool:
    """`X-Ds2-Target-Account`: a credential id, its name, or "provider/name"."""
    credential = candidate.credential
    return pin in (str(credential.id), credential.name, f"{candidate.target.provider.name}/{credential.name}")


class Selector:
    def __init__(self) -> None:
        self._turns: dict[tuple, itertools.count] = defaultdict(itertools.count)
        self._weights: dict[tuple, dict[tuple, float]] = defaultdict(dict)
        self._latency: dict[tuple[int, str], tuple[float, float]] = {}

    def plan(self, route: RouteInfo, snapshot: Snapshot, pin: str | None = None) -> list[Candidate]:
        out: list[Candidate] = []
        for depth, current in enumerate(self._route_chain(route, snapshot)):
            tiers: dict[int, list[tuple[TargetInfo, CredentialInfo]]] = defaultdict(list)
            for target in current.targets:
                for credential in target.provider.credentials:
                    tiers[target.tier].append((target, credential))
            for tier in sorted(tiers):
                ordered = self._order(current, tier, tiers[tier])
                out.extend(Candidate(current, t, c, depth * TIER_SPAN + tier) for t, c in ordered)
        if pin is not None:
            out = [c for c in out if pin_matches(c, pin)]
        return out

    def observe_latency(self, credential_id: int, upstream_model: str, seconds: float) -> None:
        key = (credential_id, upstream_model)
        previous = self._latency.get(key)
        average = seconds if previous is None else LATENCY_ALPHA * seconds + (1 - LATENCY_ALPHA) * previous[0]
        self._latency[key] = (average, time.monotonic())

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    def _route_chain(route: RouteInfo, snapshot: Snapshot) -> list[RouteInfo]:
        """The route, then its fallbacks depth-first (each route once, cycles ignored)."""
        chain: list[RouteInfo] = []
        seen: set[int] = set()

        def visit(current: RouteInfo, depth: int) -> None:
            if current.id in seen or depth > MAX_FALLBACK_DEPTH:
                return
            seen.add(current.id)
            chain.append(current)
            for name in current.fallbacks:
                fallback = snapshot.route_for(name)
                if fallback is not None:
                    visit(fallback, depth + 1)

        visit(route, 0)
        return chain

    def _rotated(self, key: tuple, pairs: list) -> list:
        start = next(self._turns[key]) % len(pairs)
        return pairs[start:] + pairs[:start]

    def _order(self, route: RouteInfo, tier: int, pairs: list[tuple[TargetInfo, CredentialInfo]]) -> list:
        key = (route.id, tier)
        if len(pairs) < 2:
            return pairs
        if route.strategy == "weighted":
            return self._weighted(key, pairs)
        rotated = self._rotated(key, pairs)
        if route.strategy == "latency":
            return sorted(rotated, key=self._latency_key)
        return rotated

    def _weighted(self, key: tuple, pairs: list) -> list:
        """Smooth weighted round-robin (as nginx does): spreads picks evenly in proportion to weight."""
        current = self._weights[key]
        total = 0
        for target, credential in pairs:
            weight = max(target.weight, 0) * max(credential.weight, 0)
            ident = (target.provider.id, target.upstream_model, credential.id)
            current[ident] = current.get(ident, 0.0) + weight
            total += weight
        if total == 0:
            return pairs

        def ident_of(pair) -> tuple:
            return (pair[0].provider.id, pair[0].upstream_model, pair[1].id)

        ordered = sorted(pairs, key=lambda pair: -current[ident_of(pair)])
        current[ident_of(ordered[0])] -= total
        return ordered

    def _latency_key(self, pair: tuple[TargetInfo, CredentialInfo]) -> float:
        target, credential = pair
        sample = self._latency.get((credential.id, target.upstream_model))
        if sample is None or time.monotonic() - sample[1] > LATENCY_STALE_SECONDS:
            return -1.0  # never or long ago measured: try it, so its average is current
        return sample[0]
