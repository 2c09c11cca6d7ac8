"""Ollama's model endpoints: `GET /api/tags`, `POST /api/show`, `GET /api/version`.

The gateway's routes are the "local models": every route the token may use is listed, with neutral
details (no size, format or quantization: the model lives at a provider, not on this disk).
"""

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.asgi_io import BodyTooLarge, ClientDisconnected, Receive, Scope, Send, read_body, send_json
from proxy.auth import authenticate
from proxy.canonical import GatewayError
from routing.snapshot import Snapshot, TokenInfo

# The Ollama API version these endpoints follow; some clients gate features (tools, thinking) on it.
OLLAMA_VERSION = "0.12.6"
CAPABILITIES = ["completion", "tools", "vision", "thinking"]
SHOW_BODY_LIMIT = 64 * 1024


def _details() -> dict[str, Any]:
    return {"parent_model": "", "format": "", "family": "", "families": None, "parameter_size": "",
            "quantization_level": ""}


def _allowed(snapshot: Snapshot, token: TokenInfo) -> list[str]:
    return snapshot.visible_models(token)


def _modified_at(snapshot: Snapshot) -> str:
    return datetime.fromtimestamp(snapshot.loaded_at or 0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _authenticated(app: Any, scope: Scope) -> tuple[Snapshot, TokenInfo]:
    snapshot = await app.runtime.config.get()
    return snapshot, authenticate(scope, snapshot)


async def tags(app: Any, scope: Scope, receive: Receive, send: Send, match: re.Match | None) -> None:
    try:
        snapshot, token = await _authenticated(app, scope)
    except GatewayError as err:
        await send_json(send, err.status, {"error": err.message})
        return
    modified = _modified_at(snapshot)
    models = [{"name": name, "model": name, "modified_at": modified, "size": 0,
               "digest": hashlib.sha256(name.encode()).hexdigest(), "details": _details()}
              for name in _allowed(snapshot, token)]
    await send_json(send, 200, {"models": models})


async def show(app: Any, scope: Scope, receive: Receive, send: Send, match: re.Match | None) -> None:
    try:
        snapshot, token = await _authenticated(app, scope)
        try:
            body = orjson.loads(await read_body(receive, SHOW_BODY_LIMIT))
        except orjson.JSONDecodeError:
            raise GatewayError("invalid_request", "the request body is not valid JSON") from None
        except BodyTooLarge:
            raise GatewayError("too_large", "request body too large") from None
        name = (body.get("model") or body.get("name")) if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise GatewayError("invalid_request", "model is required")
        if name not in _allowed(snapshot, token):
            raise GatewayError("not_found", f"model '{name}' not found")
    except GatewayError as err:
        await send_json(send, err.status, {"error": err.message})
        return
    except ClientDisconnected:
        return
    await send_json(send, 200, {
        "modelfile": f"# served by ds2api: route '{name}'\nFROM {name}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": _details(),
        "model_info": {"general.architecture": "ds2api"},
        "capabilities": CAPABILITIES,
        "modified_at": _modified_at(snapshot),
    })


async def version(app: Any, scope: Scope, receive: Receive, send: Send, match: re.Match | None) -> None:
    """Unauthenticated, like Ollama's: clients probe it before they know they need a token."""
    await send_json(send, 200, {"version": OLLAMA_VERSION})
