"""Per-credential health: ok, cooling down until a time, or invalid; last error; provider-reported headroom.

The truth lives in Redis (hash `<prefix>:rt:c:<id>`, written atomically by `limits.lua` as requests settle),
so every replica skips the same cooling or invalid credentials. Changes are mirrored to the Credential row
(`health_status`, `cooldown_until`, `last_error`, `last_checked_at`) by `HealthMirror`, off the request
path, and published on `<prefix>:rt:health` for live dashboards.

The synchronous helpers at the bottom serve the dashboard, probes and services (never the proxy hot path).
"""

import asyncio
import logging
import time
from datetime import UTC, datetime

import redis
from django.conf import settings

from routing.limits import HealthChange, key_prefix
from routing.models import Credential, HealthStatus

log = logging.getLogger(__name__)


def _moment(epoch: float) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=UTC) if epoch else None


def _write_changes(changes: dict[int, HealthChange]) -> None:
    checked = datetime.now(tz=UTC)
    for change in changes.values():
        fields = {"health_status": change.status, "cooldown_until": _moment(change.cooldown_until),
                  "last_checked_at": checked}
        if change.error:
            fields["last_error"] = change.error[:500]
        # update(), not save(): no auto_now bump and no config-change announcement for a health flip
        Credential.objects.filter(id=change.credential_id).update(**fields)


class HealthMirror:
    """Copies health changes to Postgres in the background, coalescing bursts per credential."""

    def __init__(self) -> None:
        self._pending: dict[int, HealthChange] = {}
        self._task: asyncio.Task | None = None

    def __call__(self, changes: list[HealthChange]) -> None:
        for change in changes:
            self._pending[change.credential_id] = change
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        from proxy.db import run_db

        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await run_db(_write_changes, batch)
            except Exception as exc:  # a database hiccup must never reach a request; retried on the next change
                log.warning("could not mirror credential health to the database: %s", exc)
                return

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            await asyncio.wait([self._task], timeout=2)


# --- synchronous access for the dashboard, probes and services ----------------------------------------


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def effective_status(status: str, cool_until: float, now: float | None = None) -> str:
    if status == HealthStatus.INVALID:
        return HealthStatus.INVALID
    if cool_until > (time.time() if now is None else now):
        return HealthStatus.COOLING
    return HealthStatus.OK


def _known(value: bytes | None) -> int | None:
    if value is None:
        return None
    number = float(value)
    return int(number) if number >= 0 else None


def read_health(credential_ids: list[int]) -> dict[int, dict]:
    """Live health per credential from Redis; raises redis.RedisError when Redis is unreachable."""
    prefix = key_prefix()
    now = time.time()
    client = _client()
    try:
        pipe = client.pipeline(transaction=False)
        for cid in credential_ids:
            pipe.hgetall(f"{prefix}c:{cid}")
            pipe.zcount(f"{prefix}c:{cid}:if", now, "+inf")
        replies = pipe.execute()
    finally:
        client.close()
    out = {}
    for i, cid in enumerate(credential_ids):
        h = {k.decode(): v for k, v in replies[2 * i].items()}
        cool_until = float(h.get("cu") or 0)
        status = effective_status((h.get("st") or b"ok").decode(), cool_until, now)
        requests_reset = float(h.get("rra") or 0)
        tokens_reset = float(h.get("rta") or 0)
        out[cid] = {
            "status": status,
            "cooldown_until": _moment(cool_until) if status == HealthStatus.COOLING else None,
            "cooldown_seconds": max(0.0, round(cool_until - now, 1)) if status == HealthStatus.COOLING else 0.0,
            "last_error": (h.get("e") or b"").decode("utf-8", "replace"),
            "last_error_at": _moment(float(h.get("ea") or 0)),
            "consecutive_failures": int(h.get("f") or 0),
            "in_flight": int(replies[2 * i + 1]),
            # the provider's last word, only while its reset time has not passed
            "remaining_requests": _known(h.get("rr")) if requests_reset > now else None,
            "limit_requests": _known(h.get("lr")),
            "requests_reset_at": _moment(requests_reset) if requests_reset > now else None,
            "remaining_tokens": _known(h.get("rt")) if tokens_reset > now else None,
            "limit_tokens": _known(h.get("lt")),
            "tokens_reset_at": _moment(tokens_reset) if tokens_reset > now else None,
            "headers_seen_at": _moment(float(h.get("hs") or 0)),
            "last_success_at": _moment(float(h.get("ok_at") or 0)),
        }
    return out


def set_health(credential_id: int, status: str, *, error: str = "", cooldown_seconds: float = 0.0) -> None:
    """Record a health verdict from outside the proxy (a probe, an admin re-test or fixing a key)."""
    cool_until = time.time() + cooldown_seconds if status == HealthStatus.COOLING else 0.0
    fields: dict = {"st": status, "cu": cool_until}
    if status == HealthStatus.OK:
        fields["f"] = 0
    if error:
        fields.update(e=error[:300], ea=time.time())
    prefix = key_prefix()
    client = _client()
    try:
        pipe = client.pipeline(transaction=True)
        pipe.hset(f"{prefix}c:{credential_id}", mapping=fields)
        pipe.publish(f"{prefix}health", f'{{"id":{credential_id},"st":"{status}","cu":{cool_until}}}')
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not record credential health in Redis: %s", exc)
    finally:
        client.close()
    _write_changes({credential_id: HealthChange(credential_id, status, cool_until, error)})


def reset_health(credential_id: int) -> None:
    """Back to ok: the secret was replaced or an admin re-enabled the credential."""
    set_health(credential_id, HealthStatus.OK)
