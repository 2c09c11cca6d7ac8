"""Stored Responses (`store: true`): kept in Redis for a while, readable only by the team that created them.

The key carries the team id, so another team's lookup misses and gets the same 404 as an unknown id.
Writes happen off the request path; a read of an id whose write is still in flight in this process waits
for it, so a client that fetches its response right after creating it always finds it.
"""

import asyncio
import logging
import re
from typing import Any

import orjson
import redis.asyncio as aioredis
from django.conf import settings

from proxy.asgi_io import Receive, Scope, Send, send_json
from proxy.auth import authenticate
from proxy.canonical import GatewayError

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 30 * 24 * 3600  # what OpenAI keeps stored responses for

_clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}  # a Redis connection pool serves one loop
_pending: dict[str, asyncio.Task] = {}


def _redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=5,
                                                          socket_connect_timeout=5)
    return client


def _key(team_id: int, response_id: str) -> str:
    return f"{settings.REDIS_PREFIX}:responses:{team_id}:{response_id}"


def _ttl() -> int:
    return int(getattr(settings, "DS2API_RESPONSE_TTL_SECONDS", DEFAULT_TTL_SECONDS))


def remember(team_id: int, response: dict[str, Any]) -> None:
    """Schedule the write of a finished Response object; never blocks or fails the request."""
    response_id = response["id"]
    task = asyncio.get_running_loop().create_task(_write(_key(team_id, response_id), orjson.dumps(response)))
    _pending[response_id] = task
    task.add_done_callback(lambda _: _pending.pop(response_id, None))


async def _write(key: str, payload: bytes) -> None:
    try:
        await _redis().set(key, payload, ex=_ttl())
    except (aioredis.RedisError, OSError) as exc:
        log.warning("could not store a response in Redis: %s", exc)


async def recall(team_id: int, response_id: str) -> dict[str, Any] | None:
    pending = _pending.get(response_id)
    if pending is not None:
        await asyncio.shield(pending)
    raw = await _redis().get(_key(team_id, response_id))
    return orjson.loads(raw) if raw else None


async def forget(team_id: int, response_id: str) -> bool:
    pending = _pending.get(response_id)
    if pending is not None:
        await asyncio.shield(pending)
    return bool(await _redis().delete(_key(team_id, response_id)))


# --- endpoints -------------------------------------------------------------------------------------


async def create_response(app: Any, scope: Scope, receive: Receive, send: Send, match: re.Match | None) -> None:
    """POST /v1/responses: the generate pipeline, told the caller's team so `store: true` can scope the copy."""
    from proxy.adapters.openai_responses import ResponsesCall

    team_id = None
    try:
        team_id = authenticate(scope, await app.runtime.config.get()).team.id
    except GatewayError:
        pass  # the pipeline authenticates again and answers 401 in the protocol's shape
    await app.pipeline.handle(scope, receive, send, "openai_responses", ResponsesCall(team_id=team_id))


async def _stored(app: Any, scope: Scope, send: Send, match: re.Match, delete: bool) -> None:
    from proxy.adapters.openai_chat import openai_error_body

    response_id = match.group("id")
    try:
        token = authenticate(scope, await app.runtime.config.get())
        if delete:
            found = await forget(token.team.id, response_id)
            body = {"id": response_id, "object": "response.deleted", "deleted": True} if found else None
        else:
            body = await recall(token.team.id, response_id)
        if body is None:
            raise GatewayError("not_found", f"No response found with id '{response_id}'.")
    except GatewayError as err:
        await send_json(send, err.status, openai_error_body(err))
        return
    except (aioredis.RedisError, OSError):
        err = GatewayError("overloaded", "the response store is unavailable; try again")
        await send_json(send, err.status, openai_error_body(err))
        return
    await send_json(send, 200, body)


async def retrieve_response(app: Any, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    """GET /v1/responses/{id}"""
    await _stored(app, scope, send, match, delete=False)


async def delete_response(app: Any, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    """DELETE /v1/responses/{id}"""
    await _stored(app, scope, send, match, delete=True)
