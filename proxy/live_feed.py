"""Publishing live dashboard data over the Redis channel layer.

Three kinds of small typed messages reach `proxy.consumers.LiveConsumer`:
- "counters": what one batch of finished requests added (requests, errors, tokens, cost, latency samples);
- "log": compact rows of those requests for the request log;
- "health": the state of some credentials (status, cooldown, in-flight, headroom, last error).

Scoping happens at the source: a team's group only ever receives that team's rows, and only the
platform-admin group receives totals across teams and credential breakdowns; health goes to admin
sockets only (see the health section below). The consumer just forwards what its groups receive.

Publishing never slows or breaks the proxy: usage summaries are sent from a background task after each
batched usage write, and a Redis hiccup only costs a few live updates (logged, never raised).
"""

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

import orjson
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

GROUP_ADMIN = "live.admin"
MAX_LATENCY_SAMPLES = 100  # enough for p50/p95 on a dashboard, small enough for a message per flush
MAX_LOG_ROWS = 50
SEND_TIMEOUT = 2.0

_pending: set[asyncio.Task] = set()


def team_group(team_id: int) -> str:
    return f"live.team.{int(team_id)}"


def _summary(rows: Sequence, *, scope: str, with_breakdown: bool) -> dict:
    latencies = [r.latency_ms for r in rows]
    if len(latencies) > MAX_LATENCY_SAMPLES:
        latencies = random.sample(latencies, MAX_LATENCY_SAMPLES)
    summary = {
        "type": "counters",
        "scope": scope,
        "t": time.time(),
        "requests": len(rows),
        "errors": sum(1 for r in rows if r.status >= 400),
        "input_tokens": sum(r.input_tokens for r in rows),
        "output_tokens": sum(r.output_tokens for r in rows),
        "cached_tokens": sum(r.cached_tokens for r in rows),
        "reasoning_tokens": sum(r.reasoning_tokens for r in rows),
        "cost_usd": float(sum(r.cost_usd or 0 for r in rows)),
        "latency_ms": latencies,
    }
    if with_breakdown:
        per_credential: dict[int, int] = defaultdict(int)
        for r in rows:
            if r.credential_id is not None:
                per_credential[r.credential_id] += 1
        summary["by_credential"] = {str(k): v for k, v in per_credential.items()}
    return summary


def _log_row(row, *, admin: bool) -> dict:
    created = row.created_at.timestamp() if row.created_at else time.time()
    data = {
        "id": row.pk,
        "t": created,
        "team_id": row.team_id,
        "token_id": row.token_id,
        "model": row.client_model,
        "protocol": row.client_protocol,
        "status": row.status,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "latency_ms": row.latency_ms,
        "error_type": row.error_type,
    }
    if admin:
        data["credential_id"] = row.credential_id
    return data


def usage_messages(rows: Sequence) -> dict[str, list[dict]]:
    """group name -> payloads, for one batch of freshly written usage rows."""
    if not rows:
        return {}
    out: dict[str, list[dict]] = {
        GROUP_ADMIN: [
            _summary(rows, scope="all", with_breakdown=True),
            {"type": "log", "rows": [_log_row(r, admin=True) for r in rows[-MAX_LOG_ROWS:]]},
        ]
    }
    by_team: dict[int, list] = defaultdict(list)
    for r in rows:
        if r.team_id is not None:
            by_team[r.team_id].append(r)
    for team_id, team_rows in by_team.items():
        out[team_group(team_id)] = [
            _summary(team_rows, scope=f"team:{team_id}", with_breakdown=False),
            {"type": "log", "rows": [_log_row(r, admin=False) for r in team_rows[-MAX_LOG_ROWS:]]},
        ]
    return out


async def _send(messages: dict[str, list[dict]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    sends = [layer.group_send(group, {"type": "live.message", "payloads": payloads})
             for group, payloads in messages.items()]
    try:
        await asyncio.wait_for(asyncio.gather(*sends), SEND_TIMEOUT)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("live dashboard update not sent: %s: %s", type(exc).__name__, exc)


async def publish_usage(rows: Sequence) -> None:
    await _send(usage_messages(rows))


def schedule_usage(rows: Sequence) -> None:
    """Called by the usage recorder after each batch is written; returns at once."""
    if not rows:
        return
    task = asyncio.get_running_loop().create_task(publish_usage(list(rows)))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


# --- health ----------------------------------------------------------------------------------------
#
# Health changes travel on the routing layer's Redis pub/sub channel (`routing.health` publishes there when
# the proxy or a probe changes a credential's state). Each admin's websocket follows that channel and
# re-reads the tiles it names (`proxy.consumers`), so whoever changes health, every open dashboard sees it.


def health_channel() -> str:
    from routing.limits import key_prefix

    return f"{key_prefix()}health"


def health_ids(raw: bytes | str) -> list[int]:
    """Credential ids named by one pub/sub message (`{"id": 7, ...}` or `{"ids": [7, 8]}`)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(data, dict):
        return []
    values = data.get("ids") if isinstance(data.get("ids"), list) else [data.get("id")]
    return [int(v) for v in values if isinstance(v, int)]


def health_message(credential_ids: Iterable[int] | None = None) -> dict:
    """A "health" message for the given credentials (all when None). Reads the database and Redis."""
    from routing.health_tiles import credential_tiles

    return {"type": "health", "t": time.time(), "credentials": credential_tiles(credential_ids)}


def publish_health(credential_ids: Iterable[int]) -> None:
    """From sync code (dashboard writes, services, Celery): tell live dashboards once the transaction commits."""
    ids = sorted({int(i) for i in credential_ids})
    if not ids:
        return

    def send() -> None:
        try:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.publish(health_channel(), orjson.dumps({"ids": ids}))
            finally:
                client.close()
        except RedisError as exc:
            log.warning("health change not announced to live dashboards: %s", exc)

    transaction.on_commit(send)
