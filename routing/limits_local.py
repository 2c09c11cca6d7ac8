"""Per-process limits, used only while Redis is unreachable.

The same rules as `limits.lua`, applied to this process's traffic alone: each replica then enforces the
full limits on its own (the sum across replicas may exceed them until Redis is back). Health recorded here
is this process's view only and is dropped when Redis returns, which stays the shared truth.
"""

import time
from collections import defaultdict
from dataclasses import dataclass

from routing.limits import HealthChange, Lease, Settlement, Slot, Subject, Verdict, key_prefix

WINDOW = 61  # whole seconds counted, so every sliding 60-second window stays under the limit


@dataclass(slots=True)
class _Health:
    status: str = "ok"
    cool_until: float = 0.0
    fails: int = 0
    remaining_requests: int | None = None
    limit_requests: int | None = None
    requests_reset_at: float = 0.0
    remaining_tokens: int | None = None
    limit_tokens: int | None = None
    tokens_reset_at: float = 0.0


class _Window:
    """Per-second buckets of the last WINDOW seconds."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}

    def total(self, now: float) -> tuple[int, int | None]:
        start = int(now) - WINDOW + 1
        for second in [s for s in self.buckets if s < start]:
            del self.buckets[second]
        return sum(self.buckets.values()), min(self.buckets, default=None)

    def add(self, second: int, amount: int, now: float) -> None:
        if amount and second > int(now) - WINDOW:
            self.buckets[second] = self.buckets.get(second, 0) + amount


class LocalLimits:
    def __init__(self) -> None:
        self.inflight: dict[str, set[str]] = defaultdict(set)
        self.requests: dict[str, _Window] = defaultdict(_Window)
        self.tokens: dict[str, _Window] = defaultdict(_Window)
        self.health: dict[int, _Health] = defaultdict(_Health)

    def _over(self, base: str, rpm: int | None, tpm: int | None, cap: int | None, now: float):
        if cap and len(self.inflight[base]) >= cap:
            return 1.0, "concurrency"
        for limit, window, what in ((rpm, self.requests, "requests per minute"),
                                    (tpm, self.tokens, "tokens per minute")):
            if limit:
                total, oldest = window[base].total(now)
                if total >= limit:
                    return oldest + WINDOW - now, what
        return None

    def reserve(self, lease_id: str, subjects: list[Subject], slots: list[Slot], mode: str, estimate: int,
                pinned: bool, retry: bool) -> Verdict:
        now = time.time()
        limited = [s for s in subjects if s.limited]
        for subject in [] if retry else limited:
            over = self._over(subject.base, subject.rpm, subject.tpm, subject.concurrency, now)
            if over is not None:
                return Verdict(reason="subject", wait=over[0], detail=f"{subject.base} {over[1]}")
        best = best_score = best_tier = None
        busy = cooling = None
        invalid = False
        for index, slot in enumerate(slots):
            if best is not None and slot.tier > best_tier:
                break
            health = self.health[slot.credential_id]
            base = f"{key_prefix()}c:{slot.credential_id}"
            in_flight = len(self.inflight[base])
            if not pinned:
                if health.status == "invalid":
                    invalid = True
                    continue
                if health.cool_until > now:
                    cooling = min(cooling or 1e9, health.cool_until - now)
                    continue
                spent = _spent_for(health, now)
                if spent:
                    busy = min(busy or 1e9, spent)
                    continue
            over = self._over(base, slot.rpm, slot.tpm, slot.max_inflight, now)
            if over is not None:
                busy = min(busy or 1e9, over[0])
                continue
            score = 0.0
            if mode == "least":
                score = -in_flight / max(slot.max_inflight or 1, 1)
            elif mode == "headroom":
                score = _headroom(health, in_flight, now)
            if best is None or score > best_score:
                best, best_score, best_tier = index, score, slot.tier
            if mode == "order":
                break
        if best is None:
            if busy is not None:
                return Verdict(reason="busy", wait=min(busy, cooling or busy))
            if cooling is not None:
                return Verdict(reason="cooling", wait=cooling)
            return Verdict(reason="invalid" if invalid else "none")
        slot = slots[best]
        bases = (*(s.base for s in limited), f"{key_prefix()}c:{slot.credential_id}")
        second = int(now)
        for base in bases:
            self.inflight[base].add(lease_id)
            if not retry or base == bases[-1]:  # a retry counts once more for the credential only
                self.requests[base].add(second, 1, now)
            self.tokens[base].add(second, estimate, now)
        return Verdict(best, Lease(lease_id, slot.credential_id, bases, second, estimate, local=True))

    def settle(self, settlement: Settlement, cooldown: dict) -> list[HealthChange]:
        now = time.time()
        lease = settlement.lease
        for base in lease.bases:
            self.inflight[base].discard(lease.id)
            self.tokens[base].add(lease.second, settlement.tokens - lease.estimate, now)
        if settlement.outcome == "client":
            return []
        health = self.health[lease.credential_id]
        hr = settlement.headroom
        if hr is not None and (hr.remaining_requests is not None or hr.remaining_tokens is not None):
            health.remaining_requests, health.limit_requests = hr.remaining_requests, hr.limit_requests
            health.requests_reset_at = now + (60.0 if hr.reset_requests is None else hr.reset_requests)
            health.remaining_tokens, health.limit_tokens = hr.remaining_tokens, hr.limit_tokens
            health.tokens_reset_at = now + (60.0 if hr.reset_tokens is None else hr.reset_tokens)
        before = health.status
        if settlement.outcome == "ok":
            health.fails = 0
            if health.status == "invalid" or (health.status == "cooling" and health.cool_until <= now):
                health.status, health.cool_until = "ok", 0.0
        else:
            health.fails += 1
            wait = None
            if settlement.outcome == "auth":
                health.status = "invalid"
            elif settlement.outcome == "rate":
                wire_retry = settlement.wire()[6]
                wait = wire_retry or _backoff(health.fails, cooldown)
            elif health.fails >= cooldown["after"]:
                wait = _backoff(health.fails - cooldown["after"] + 1, cooldown)
            if wait is not None and health.status != "invalid":
                health.status, health.cool_until = "cooling", max(health.cool_until, now + wait)
        if health.status == before and health.status != "cooling":
            return []
        return [HealthChange(lease.credential_id, health.status, health.cool_until, settlement.error)]


def _backoff(n: int, cooldown: dict) -> float:
    return min(cooldown["base"] * 2 ** max(n - 1, 0), cooldown["max"])


def _spent_for(health: _Health, now: float) -> float:
    """Seconds until the provider's own quota resets, when it said none is left."""
    waits = [0.0]
    if health.remaining_requests == 0 and health.requests_reset_at > now:
        waits.append(health.requests_reset_at - now)
    if health.remaining_tokens == 0 and health.tokens_reset_at > now:
        waits.append(health.tokens_reset_at - now)
    return max(waits)


def _headroom(health: _Health, in_flight: int, now: float) -> float:
    score = 1.0
    if health.remaining_requests is not None and health.requests_reset_at > now:
        limit = health.limit_requests or health.remaining_requests
        score = min(score, (health.remaining_requests - in_flight) / max(limit, 1))
    if health.remaining_tokens is not None and health.tokens_reset_at > now:
        limit = health.limit_tokens or health.remaining_tokens
        score = min(score, health.remaining_tokens / max(limit, 1))
    return score
