"""Model lists in the shape the calling SDK expects.

`GET /v1/models` (and `/v1/models/{id}`) is shared by three SDKs: a Gemini client is recognised by the
`/v1beta/` path or its key (`x-goog-api-key` / `?key=`), an Anthropic client by `anthropic-version`; anyone
else gets OpenAI's shape. Every list names the routes the token may use.
"""

import re
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.adapters import client_protocol
from proxy.asgi_io import Receive, Scope, Send, header, send_json
from proxy.auth import authenticate
from proxy.canonical import GatewayError

# Routes have no release date; Anthropic's model objects require one.
CREATED_AT = "2025-01-01T00:00:00Z"

Handler = Callable[..., Awaitable[None]]


def client_style(scope: Scope) -> str:
    if scope["path"].startswith("/v1beta/") or header(scope, b"x-goog-api-key"):
        return "gemini"
    if header(scope, b"anthropic-version"):
        return "anthropic"
    query = scope.get("query_string") or b""
    if query.startswith(b"key=") or b"&key=" in query:
        return "gemini"
    return "openai"


def _gemini_model(name: str) -> dict[str, Any]:
    return {"name": f"models/{name}", "baseModelId": name, "version": "001", "displayName": name,
            "supportedGenerationMethods": ["generateContent", "countTokens"]}


def _anthropic_model(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": CREATED_AT}


def _openai_model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "ds2api"}


async def _visible(app, scope: Scope) -> list[str]:
    snapshot = await app.runtime.config.get()
    token = authenticate(scope, snapshot)
    return snapshot.visible_models(token)


def _error_body(style: str, err: GatewayError) -> Any:
    return client_protocol({"gemini": "gemini", "anthropic": "anthropic"}.get(style, "openai_chat")).render_error(err)


def vendor_models(openai_list: Handler) -> Handler:
    """The list handler: Gemini's or Anthropic's shape for their SDKs, `openai_list` for everyone else."""

    async def handler(app, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
        style = client_style(scope)
        if style == "openai":
            await openai_list(app, scope, receive, send, match)
            return
        try:
            names = await _visible(app, scope)
        except GatewayError as err:
            await send_json(send, err.status, _error_body(style, err))
            return
        if style == "gemini":
            await send_json(send, 200, {"models": [_gemini_model(n) for n in names]})
            return
        await send_json(send, 200, {"data": [_anthropic_model(n) for n in names], "has_more": False,
                                    "first_id": names[0] if names else None, "last_id": names[-1] if names else None})

    return handler


async def get_model(app, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    """`GET /{v1,v1beta}/models/{id}` in the caller's shape; 404 in its error shape for an unknown model."""
    style = client_style(scope)
    name = match.group("model").removeprefix("models/")
    try:
        if name not in await _visible(app, scope):
            raise GatewayError("not_found", f"the model '{name}' does not exist", param="model",
                               code="model_not_found")
    except GatewayError as err:
        await send_json(send, err.status, _error_body(style, err))
        return
    render = {"gemini": _gemini_model, "anthropic": _anthropic_model}.get(style, _openai_model)
    await send_json(send, 200, render(name))
