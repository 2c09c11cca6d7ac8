"""Limits every gateway replica enforces together, kept in Redis.

Per credential: in-flight, requests and tokens per minute; per gateway token and team: requests and tokens
per minute and concurrency. `reserve()` checks them and takes a lease in one atomic Lua call (one round trip
per request), choosing the credential as the route's strategy asks. `settle()` releases the lease, corrects
the token charge with the real usage and records the credential's health; settlements ride along with the
next call (or a flush a moment later), so finishing a request costs no round trip of its own.

If Redis is unreachable the gateway keeps serving with per-process limits (`LocalLimits`), logs it once,
reports it on /readyz and switches back by itself once Redis answers again.
"""

import asyncio
import hashlib
import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from django.conf import settings
from redis.exceptions import NoScriptError, RedisError

from routing.ratelimit_headers import Headroom
from routing.redis_wire import WireRedis

log = logging.getLogger(__name__)

SCRIPT = (Path(__file__).parent / "limits.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 (the script's name in Redis, not a secret)
RECHECK_SECONDS = 2.0


def key_prefix() -> str:
    return f"{settings.REDIS_PREFIX}:rt:"


def setting(name: str, default: float) -> float:
    return getattr(settings, name, default)


@dataclass(frozen=True, slots=True)
class Subject:
    """A gateway token or team whose own limits apply to the request."""

    base: str  # e.g. "<prefix>t:12"
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.concurrency)


@dataclass(frozen=True, slots=True)
class Slot:
    """One candidate credential, in the order the strategy prefers."""

    credential_id: int
    max_inflight: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    tier: int = 0


@dataclass(slots=True)
class Lease:
    id: str
    credential_id: int
    bases: tuple[str, ...]  # every key base charged (credential, token, team)
    second: int  # the per-second bucket charged
    estimate: int
    local: bool = False
    token_bases: tuple[str, ...] = ()  # the bases whose tokens-per-minute limit counts this lease's tokens


@dataclass(slots=True)
class Settlement:
    lease: Lease
    outcome: str  # "ok" | "rate" (429) | "fail" (5xx, timeout, connect) | "auth" (401/403) | "client"
    tokens: int = 0  # real total tokens, once known
    retry_after: float | None = None
    error: str = ""
    headroom: Headroom | None = None

    def wire(self) -> list:
        hr = self.headroom
        retry = self.retry_after
        if retry is None and hr is not None and self.outcome == "rate":
            retry = hr.retry_after if hr.retry_after is not None else hr.exhausted_for()
        headroom = 0
        if hr is not None and (hr.remaining_requests is not None or hr.remaining_tokens is not None):
            # A count without a reset time is trusted for a minute (the usual window).
            headroom = [_num(hr.remaining_requests), _num(hr.limit_requests), _reset(hr.reset_requests),
                        _num(hr.remaining_tokens), _num(hr.limit_tokens), _reset(hr.reset_tokens)]
        delta = self.tokens - self.lease.estimate
        return [self.lease.id, list(self.lease.bases), self.lease.second, delta, self.lease.credential_id,
                self.outcome, retry or 0, self.error[:300], headroom, list(self.lease.token_bases)]


def _num(value: int | None) -> int:
    # cjson turns JSON null into a sentinel, not nil: "unknown" travels as -1 instead.
    return value if value is not None else -1


def _reset(seconds: float | None) -> float:
    return 60.0 if seconds is None else seconds


@dataclass(slots=True)
class Verdict:
    """What `reserve()` decided: a lease on `slots[index]`, or why not and how long to wait."""

    index: int | None = None
    lease: Lease | None = None
    reason: str = ""  # "subject" | "busy" | "cooling" | "invalid" | "none"
    wait: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HealthChange:
    credential_id: int
    status: str
    cooldown_until: float  # epoch seconds, 0 when not cooling
    error: str


@dataclass
class _Hooks:
    released: list[Callable[[], None]] = field(default_factory=list)
    health: list[Callable[[list[HealthChange]], None]] = field(default_factory=list)


class Limits:
    """The per-process handle on the shared limits (one per proxy runtime)."""

    def __init__(self, redis_url: str | None = None) -> None:
        from routing.limits_local import LocalLimits

        self.redis_url = redis_url or settings.REDIS_URL
        self.local = LocalLimits()
        self.hooks = _Hooks()
        self.degraded = False
        self._client: WireRedis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Settlement] = []
        self._live: dict[str, Lease] = {}
        self._tasks: set[asyncio.Task] = set()
        self._flushing = False
        self._renewer: asyncio.Task | None = None
        self._process = uuid.uuid4().hex[:10]
        self._ids = itertools.count(1)

    # -- public API ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return "degraded: per-process limits (Redis unreachable)" if self.degraded else "ok"

    def use_redis(self, url: str) -> None:
        """Point at another Redis (operations and tests); the next call connects to it."""
        self.redis_url, self._client, self._loop = url, None, None

    def new_lease_id(self) -> str:
        return f"{self._process}:{next(self._ids)}"

    async def reserve(self, subjects: list[Subject], slots: list[Slot], *, mode: str, estimate: int,
                      pinned: bool = False, retry: bool = False) -> Verdict:
        """Take a lease on the best eligible slot, charging `subjects` too (checked first, unless `retry`)."""
        lease_id = self.new_lease_id()
        args = (lease_id, subjects, slots, mode, estimate, pinned, retry)
        verdict = self.local.reserve(*args) if self.degraded else await self._reserve_redis(*args)
        if verdict.lease is not None:
            self._live[lease_id] = verdict.lease
            self._ensure_renewer()
        return verdict

    def settle(self, settlement: Settlement) -> None:
        """Release a lease and record its outcome; never waits (applied on the next Redis call)."""
        lease = settlement.lease
        self._live.pop(lease.id, None)
        if lease.local:
            self._health(self.local.settle(settlement, self._cooldown()))
        elif not self.degraded:
            self._pending.append(settlement)
            if not self._flushing:
                self._flushing = True
                self._spawn(self._flush_soon())
        # else: Redis is gone; the lease expires there by itself
        for wake in self.hooks.released:
            wake()

    async def flush(self) -> None:
        """Send pending settlements now (used at shutdown and by tests)."""
        if self._pending and not self.degraded:
            await self._call({})

    async def close(self) -> None:
        for lease in list(self._live.values()):
            self.settle(Settlement(lease, "client"))
        await self.flush()
        for task in [*self._tasks, self._renewer]:
            if task is not None and not task.done():
                task.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- Redis -----------------------------------------------------------------------------
    def _ttl(self) -> float:
        return setting("DS2API_LEASE_SECONDS", 60.0)

    def _cooldown(self) -> dict:
        return {"base": setting("DS2API_COOLDOWN_BASE_SECONDS", 1.0),
                "max": setting("DS2API_COOLDOWN_MAX_SECONDS", 300.0),
                "after": setting("DS2API_COOLDOWN_AFTER_FAILURES", 3)}

    def _redis(self) -> WireRedis:
        """The lean pipelined connection (routing/redis_wire.py): this call runs once per request."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            timeout = setting("DS2API_REDIS_TIMEOUT", 0.5)
            self._client = WireRedis(self.redis_url, timeout=timeout, connect_timeout=timeout)
            self._loop = loop
        return self._client

    async def _eval(self, arg: bytes):
        """EVALSHA, loading the script on the first call and after a Redis restart."""
        client = self._redis()
        try:
            return await client.call(b"EVALSHA", SCRIPT_SHA, b"0", arg)
        except NoScriptError:
            return await client.call(b"EVAL", SCRIPT, b"0", arg)

    async def _call(self, payload: dict) -> dict | None:
        """One script call carrying every pending settlement. None when Redis failed (now degraded)."""
        settlements, self._pending = self._pending, []
        payload.update(p=key_prefix(), ttl=self._ttl(), cd=self._cooldown(),
                       settle=[s.wire() for s in settlements])
        try:
            raw = await self._eval(orjson.dumps(payload))
        except (RedisError, OSError, TimeoutError) as exc:
            self._degrade(exc)
            return None
        result = orjson.loads(raw)
        changes = result.get("ch")
        if changes:
            self._health([HealthChange(int(c[0]), c[1], float(c[2]), c[3]) for c in changes])
        return result

    async def _reserve_redis(self, lease_id, subjects, slots, mode, estimate, pinned, retry) -> Verdict:
        limited = [s for s in subjects if s.limited]
        prefix = key_prefix()
        request = {
            "subj": [[s.base, s.rpm or 0, s.tpm or 0, s.concurrency or 0] for s in limited],
            "c": [[s.credential_id, s.max_inflight or 0, s.rpm or 0, s.tpm or 0, s.tier] for s in slots],
            "mode": mode, "pin": pinned, "est": int(estimate), "lease": lease_id, "retry": retry,
        }
        result = await self._call({"reserve": request})
        if result is None:
            return self.local.reserve(lease_id, subjects, slots, mode, estimate, pinned, retry)
        index = result["ok"]
        if index < 0:
            return Verdict(reason=result.get("why", "none"), wait=max(0.0, float(result.get("wait") or 0)),
                           detail=result.get("what", ""))
        slot = slots[index]
        credential = f"{prefix}c:{slot.credential_id}"
        bases = (*(s.base for s in limited), credential)
        token_bases = (*(s.base for s in limited if s.tpm), *((credential,) if slot.tpm else ()))
        return Verdict(index, Lease(lease_id, slot.credential_id, bases, int(result["s"]), int(estimate),
                                    token_bases=token_bases))

    async def _flush_soon(self) -> None:
        # Give a reserve that is about to run the chance to carry these settlements; then send them anyway.
        try:
            await asyncio.sleep(0.002)
            while self._pending and not self.degraded:
                await self._call({})
        finally:
            self._flushing = False

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Keep this process's long requests' leases alive; a crashed process's leases simply expire."""
        while True:
            await asyncio.sleep(self._ttl() / 3)
            remote = [[lease.id, list(lease.bases)] for lease in self._live.values() if not lease.local]
            if remote and not self.degraded:
                await self._call({"renew": remote})

    def _degrade(self, exc: BaseException) -> None:
        if not self.degraded:
            self.degraded = True
            log.error("Redis is unreachable (%s): enforcing limits per process until it is back", exc)
            self._spawn(self._recover())
        self._pending.clear()

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            try:
                await self._redis().call(b"PING")
            except (RedisError, OSError, TimeoutError):
                continue
            self.degraded = False
            log.warning("Redis is reachable again: limits are shared across replicas again")
            return

    def _health(self, changes: list[HealthChange]) -> None:
        for sink in self.hooks.health:
            sink(changes)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
