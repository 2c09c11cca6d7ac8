"""Admitting a request: token and team limits, then a credential lease, waiting in line when all are busy.

The answer to the client when admission fails, always in its own protocol's shape:
- a token or team limit is reached: 429 `rate_limit`, Retry-After when the window frees a slot;
- every eligible credential stays busy (or cooling down) past the route's queue timeout: 429 with
  Retry-After (the earliest moment one should free up);
- no credential can serve at all (all invalid or disabled): 503 `overloaded`.
"""

import math

from django.conf import settings

from proxy.canonical import GatewayError
from routing.limits import Lease, Limits, Slot, Subject, Verdict, key_prefix
from routing.queue import FairQueue, QueueFull
from routing.selector import Candidate, limit_mode
from routing.snapshot import RouteInfo, TokenInfo

SUBJECT_NAMES = {"t": "this gateway token", "m": "this token's team"}


def subjects_of(token: TokenInfo) -> list[Subject]:
    prefix = key_prefix()
    team = token.team
    return [
        Subject(f"{prefix}t:{token.id}", token.rpm, token.tpm, token.max_concurrency),
        Subject(f"{prefix}m:{team.id}", team.rpm, team.tpm, team.max_concurrency),
    ]


def _subject_error(verdict: Verdict) -> GatewayError:
    base, _, limit = verdict.detail.partition(" ")
    who = SUBJECT_NAMES.get(base.rsplit(":", 2)[-2], "this token")
    return GatewayError("rate_limit", f"rate limit reached for {who} ({limit or 'limit'}); retry later",
                        retry_after=max(1.0, math.ceil(verdict.wait)))


class Admission:
    def __init__(self, limits: Limits, queue: FairQueue | None = None) -> None:
        self.limits = limits
        self.queue = queue or FairQueue(getattr(settings, "DS2API_QUEUE_MAX_WAITING", 1000))
        limits.hooks.released.append(self.queue.kick)

    async def admit(self, route: RouteInfo, candidates: list[Candidate], token: TokenInfo, estimate: int,
                    pin: str | None, *, retry: bool = False) -> tuple[Candidate, Lease] | None:
        """A lease on one of `candidates`. On a retry, None when nothing is free right now (no waiting)."""
        slots = [Slot(c.credential.id, c.credential.max_inflight, c.credential.rpm, c.credential.tpm, c.tier)
                 for c in candidates]
        subjects = subjects_of(token)
        mode = limit_mode(route)
        max_wait = route.queue_timeout if route.queue_timeout is not None else getattr(
            settings, "DS2API_QUEUE_TIMEOUT", 10.0)
        last = Verdict()

        async def attempt() -> Verdict | None:
            nonlocal last
            last = await self.limits.reserve(subjects, slots, mode=mode, estimate=estimate, pinned=pin is not None,
                                             retry=retry)
            if last.lease is not None:
                return last
            if last.reason == "subject":
                raise _subject_error(last)
            if last.reason in ("invalid", "none"):
                raise GatewayError("overloaded", f"no usable provider credential for '{route.model}' "
                                   "(all are invalid or disabled)")
            if last.reason == "cooling" and last.wait > max_wait:
                raise self._busy(route, last.wait)
            return None

        key = (route.id, pin)
        verdict = None
        if retry or not self.queue.waiting(key):
            verdict = await attempt()
            if verdict is None and retry:
                return None
        if verdict is None:
            if max_wait <= 0:
                raise self._busy(route, last.wait)
            try:
                verdict = await self.queue.wait(key, attempt, max_wait)
            except QueueFull:
                raise self._busy(route, last.wait) from None
            if verdict is None:
                raise self._busy(route, last.wait)
        return candidates[verdict.index], verdict.lease

    @staticmethod
    def _busy(route: RouteInfo, wait: float) -> GatewayError:
        return GatewayError("rate_limit", f"every provider credential for '{route.model}' is busy; retry later",
                            retry_after=max(1.0, math.ceil(wait)))
