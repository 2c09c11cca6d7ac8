"""Throttling repeated gateway-token failures per client address, and auditing them in batches.

After DS2API_AUTH_MAX_FAILURES failed authentications (no token, an unknown or wrong one, a revoked or expired
one) from one address within a clock minute, requests from that address are answered 429 in the client's own
protocol, without looking at their token, until the minute is over. Tokens carry 240 random bits, so this is
not what keeps them safe; it stops a misconfigured or hostile client from hammering the gateway and its logs,
and makes the hammering visible. 0 turns the throttle off.

Counting never costs the hot path a round trip: each worker counts in memory, and a flush a moment after the
first failure adds its count to a Redis counter per address and minute (INCRBY), learning the total every
replica has seen; a worker refuses once its own unflushed count plus the last total it learnt reaches the
limit. If Redis is down the per-worker count still applies. The same flush writes one `auth.token_failed`
audit event per address (with the count, the reasons and the visible `ds2-` prefixes tried, never a token)
in one bulk insert, so a flood of failures is a handful of rows, not one write each.

The address is the ASGI client address: behind a reverse proxy, run uvicorn with `--forwarded-allow-ips` set
to the proxy so it is the real client's, or every client shares the proxy's address (and its throttle).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from django.conf import settings
from django.db import DatabaseError

from accounts.tokens import TOKEN_MARK, token_prefix
from proxy.canonical import GatewayError
from proxy.db import run_db

log = logging.getLogger(__name__)

DEFAULT_MAX_FAILURES = 30
WINDOW_SECONDS = 60
FLUSH_DELAY = 0.5  # failures are gathered this long before one Redis round trip and one insert
MAX_PREFIXES = 5
MAX_PENDING_ADDRESSES = 10_000  # bound on memory under a flood from many addresses


def max_failures() -> int:
    return int(getattr(settings, "DS2API_AUTH_MAX_FAILURES", DEFAULT_MAX_FAILURES))


@dataclass
class _Failures:
    count: int = 0
    reasons: Counter = field(default_factory=Counter)
    prefixes: set[str] = field(default_factory=set)
    team_id: int | None = None
    first: float = 0.0


class AuthThrottle:
    def __init__(self) -> None:
        self._window = -1
        self._known: dict[str, int] = {}  # address -> total failures every replica had reported (last seen)
        self._unflushed: dict[str, int] = {}  # address -> failures not yet added to the shared counter
        self._sending: dict[str, int] = {}  # address -> failures on their way to it
        self._audit: dict[str, _Failures] = {}
        self._flush: asyncio.Task | None = None
        self._clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}

    def _roll(self, now: float) -> int:
        window = int(now // WINDOW_SECONDS)
        if window != self._window:
            self._window, self._known, self._unflushed, self._sending = window, {}, {}, {}
        return window

    def check(self, address: str | None) -> None:
        """Raise a 429 GatewayError if this address has failed too often this minute."""
        limit = max_failures()
        if limit <= 0 or not address:
            return
        now = time.time()
        self._roll(now)
        seen = self._known.get(address, 0) + self._unflushed.get(address, 0) + self._sending.get(address, 0)
        if seen >= limit:
            retry_after = WINDOW_SECONDS - now % WINDOW_SECONDS
            raise GatewayError("rate_limit", "too many failed authentication attempts from this address; "
                               f"retry in {int(retry_after) + 1} seconds", retry_after=retry_after)

    def failed(self, address: str | None, reason: str, token: str | None, team_id: int | None = None) -> None:
        """Count one failed authentication (no I/O here: a flush follows shortly)."""
        if max_failures() <= 0 or not address:
            return
        now = time.time()
        self._roll(now)
        if address not in self._unflushed and len(self._unflushed) >= MAX_PENDING_ADDRESSES:
            return
        self._unflushed[address] = self._unflushed.get(address, 0) + 1
        entry = self._audit.get(address)
        if entry is None:
            entry = self._audit[address] = _Failures(first=now)
        entry.count += 1
        entry.reasons[reason] += 1
        entry.team_id = entry.team_id or team_id
        if token and token.startswith(TOKEN_MARK) and len(entry.prefixes) < MAX_PREFIXES:
            entry.prefixes.add(token_prefix(token))  # the visible prefix only, and only of ds2 tokens
        if self._flush is None or self._flush.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the proxy (a script, a test): the next flush takes it along
                return
            self._flush = loop.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        while True:  # failures that arrive while a flush runs are taken by the next round
            await asyncio.sleep(FLUSH_DELAY)
            await self.flush()
            if not self._unflushed and not self._audit:
                return

    async def flush(self) -> None:
        window, unflushed, self._unflushed = self._window, self._unflushed, {}
        audit, self._audit = self._audit, {}
        if unflushed:
            self._sending = unflushed
            try:
                await self._share(window, unflushed)
            finally:
                if self._window == window:
                    self._sending = {}
        if audit:
            await self._write_audit(audit)

    async def _share(self, window: int, unflushed: dict[str, int]) -> None:
        prefix = f"{settings.REDIS_PREFIX}:rt:authfail:{window}:"
        try:
            client = self._redis()
            pipe = client.pipeline(transaction=False)
            for address, count in unflushed.items():
                pipe.incrby(prefix + address, count)
                pipe.expire(prefix + address, WINDOW_SECONDS * 2)
            totals = (await pipe.execute())[::2]
        except (aioredis.RedisError, OSError) as exc:
            log.warning("auth failure counters not shared (Redis: %s); counting per process", exc)
            if window == self._window:  # keep them counted here
                for address, count in unflushed.items():
                    self._unflushed[address] = self._unflushed.get(address, 0) + count
            return
        if window == self._window:
            for address, total in zip(unflushed, totals, strict=True):
                self._known[address] = max(self._known.get(address, 0), int(total))

    async def _write_audit(self, audit: dict[str, _Failures]) -> None:
        from accounts.models import AuditEvent

        events = [
            AuditEvent(actor_label="(gateway token)", team_id=entry.team_id, action="auth.token_failed", ip=address,
                       details={"count": entry.count, "reasons": dict(entry.reasons),
                                "prefixes": sorted(entry.prefixes), "since": round(entry.first, 3)})
            for address, entry in audit.items()
        ]
        try:
            await run_db(AuditEvent.objects.bulk_create, events)
        except DatabaseError as exc:
            log.warning("%d auth-failure audit events not written (%s)", len(events), exc)

    def _redis(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            timeout = float(getattr(settings, "DS2API_REDIS_TIMEOUT", 0.5))
            client = self._clients[loop] = aioredis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)
        return client

    async def close(self) -> None:
        """At shutdown: write what is pending."""
        if self._flush is not None and not self._flush.done():
            self._flush.cancel()
        await self.flush()
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


THROTTLE = AuthThrottle()
