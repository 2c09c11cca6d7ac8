"""The bare-ASGI proxy application: every vendor API path, outside Django's request stack."""

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import redis.asyncio as aioredis
from django.conf import settings
from django.db import connection

from proxy import metrics, ollama_api, response_store
from proxy.adapters import client_protocol
from proxy.adapters.base import FORWARDED_HEADERS, InboundCall
from proxy.asgi_io import Receive, Scope, Send, send_json
from proxy.auth import authenticate
from proxy.canonical import GatewayError
from proxy.db import run_db
from proxy.embeddings import gemini_embeddings, openai_embeddings
from proxy.model_lists import get_model, vendor_models
from proxy.pipeline import Pipeline
from proxy.runtime import Runtime
from proxy.token_count import anthropic_count_tokens, gemini_count_tokens

log = logging.getLogger(__name__)

Handler = Callable[["ProxyApp", Scope, Receive, Send, re.Match], Awaitable[None]]


def generate(protocol: str) -> Handler:
    async def handler(app: "ProxyApp", scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
        await app.pipeline.handle(scope, receive, send, protocol, inbound_call(scope, match))

    return handler


def inbound_call(scope: Scope, match: re.Match | None) -> InboundCall:
    """What the URL says (Gemini names the model and the streaming mode in the path and `alt=sse`), and the
    few client headers an adapter may pass on."""
    headers = forwarded_headers(scope)
    groups = match.groupdict() if match else {}
    method = groups.get("method")
    if not method:
        return InboundCall(headers=headers)
    query = query_params(scope)
    return InboundCall(path_model=groups.get("model"), stream=method == "streamGenerateContent",
                       sse=query.get("alt") == "sse", query=query, headers=headers)


def forwarded_headers(scope: Scope) -> dict[str, str]:
    """The client's FORWARDED_HEADERS; a header sent twice is joined with a comma, as HTTP allows."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        if name in FORWARDED_HEADERS:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


async def list_models(app: "ProxyApp", scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    snapshot = await app.runtime.config.get()
    try:
        token = authenticate(scope, snapshot)
    except GatewayError as err:
        await send_json(send, err.status, client_protocol("openai_chat").render_error(err))
        return
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "ds2api"}
            for name in snapshot.visible_models(token)]
    await send_json(send, 200, {"object": "list", "data": data})


async def healthz(app: "ProxyApp", scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    await send_json(send, 200, {"status": "ok"})


def _database_ok() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return True


async def readyz(app: "ProxyApp", scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(run_db(_database_ok), 3)
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the reason is reported, not raised
        checks["postgres"] = f"error: {type(exc).__name__}"
    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
        checks["redis"] = "ok"
    except (aioredis.RedisError, OSError) as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    finally:
        await client.aclose()
    checks["limits"] = app.runtime.limits.state  # "degraded: ..." while limits are per process
    ready = all(value == "ok" for value in checks.values())
    await send_json(send, 200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})


GEMINI_MODEL = r"/(?:v1|v1beta)/models/(?P<model>[^/:]+)"

# (method, path regex, handler). Exact strings are matched first through a dict; regexes after.
ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", r"/v1/chat/completions", generate("openai_chat")),
    ("GET", r"/v1/models", vendor_models(list_models)),
    ("POST", r"/v1/responses", response_store.create_response),
    ("GET", r"/v1/responses/(?P<id>[\w-]+)", response_store.retrieve_response),
    ("DELETE", r"/v1/responses/(?P<id>[\w-]+)", response_store.delete_response),
    ("POST", r"/api/chat", generate("ollama_chat")),
    ("POST", r"/api/generate", generate("ollama_generate")),
    ("GET", r"/api/tags", ollama_api.tags),
    ("POST", r"/api/show", ollama_api.show),
    ("GET", r"/api/version", ollama_api.version),
    ("POST", r"/v1/messages", generate("anthropic")),
    ("POST", r"/anthropic/v1/messages", generate("anthropic")),
    ("POST", GEMINI_MODEL + r":(?P<method>generateContent|streamGenerateContent)", generate("gemini")),
    ("POST", r"/v1/messages/count_tokens", anthropic_count_tokens),
    ("POST", r"/anthropic/v1/messages/count_tokens", anthropic_count_tokens),
    ("POST", GEMINI_MODEL + r":countTokens", gemini_count_tokens),
    ("POST", GEMINI_MODEL + r":(?P<method>embedContent|batchEmbedContents)", gemini_embeddings),
    ("POST", r"/v1/embeddings", openai_embeddings),
    ("GET", r"/v1beta/models", vendor_models(list_models)),
    ("GET", r"/anthropic/v1/models", vendor_models(list_models)),
    ("GET", GEMINI_MODEL, get_model),
    ("GET", r"/anthropic/v1/models/(?P<model>[^/:]+)", get_model),
    ("GET", r"/healthz", healthz),
    ("GET", r"/readyz", readyz),
    ("GET", r"/metrics", metrics.metrics_endpoint),
]

PROXY_PREFIXES = ("/v1/", "/v1beta/", "/anthropic/", "/healthz", "/readyz", "/metrics")
OLLAMA_PATHS = {"/api/chat", "/api/generate", "/api/tags", "/api/show", "/api/version", "/api/embed", "/api/ps"}


def protocol_of_path(path: str) -> str:
    """The client protocol whose error shape an unrouted path gets: Gemini for `/v1beta/...` and
    `/v1/models/{model}:{method}`, Anthropic for `/anthropic/...` and `/v1/messages...`, Ollama for `/api/...`,
    OpenAI otherwise."""
    if path.startswith("/v1beta/") or path == "/v1beta" or (path.startswith("/v1/models/") and ":" in path):
        return "gemini"
    if path.startswith(("/anthropic/", "/v1/messages")) or path == "/anthropic":
        return "anthropic"
    if path.startswith("/api/"):
        return "ollama_chat"
    return "openai_chat"


def is_proxy_path(path: str) -> bool:
    return path.startswith(PROXY_PREFIXES) or path in OLLAMA_PATHS or path == "/v1"


class ProxyApp:
    def __init__(self) -> None:
        self.runtime = Runtime()
        self.pipeline = Pipeline(self.runtime)
        self._exact: dict[tuple[str, str], Handler] = {}
        self._patterns: list[tuple[str, re.Pattern, Handler]] = []
        for method, path, handler in ROUTES:
            if re.fullmatch(r"[\w/.:-]+", path):
                self._exact[(method, path)] = handler
            else:
                self._patterns.append((method, re.compile(path + "$"), handler))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        method, path = scope["method"], scope["path"]
        handler = self._exact.get((method, path))
        match = None
        if handler is None:
            for route_method, pattern, candidate in self._patterns:
                if route_method == method and (match := pattern.match(path)):
                    handler = candidate
                    break
        if handler is None:
            await self._no_route(send, method, path)
            return
        await handler(self, scope, receive, send, match)

    async def _no_route(self, send: Send, method: str, path: str) -> None:
        """404 for an unknown path, 405 (with `Allow`) for a known one asked with another method, in the error
        shape of the API family the path belongs to."""
        allowed = sorted({m for m, p in self._exact if p == path} | {m for m, p, _ in self._patterns if p.match(path)})
        protocol = protocol_of_path(path)
        if allowed:
            err = GatewayError("invalid_request", f"method {method} is not allowed for {path}", status=405)
        else:
            # OpenAI answers an unknown URL with invalid_request_error; Anthropic and Google with "not found"
            kind = "invalid_request" if protocol == "openai_chat" else "not_found"
            err = GatewayError(kind, f"unknown endpoint {method} {path}", status=404)
        extra = [(b"allow", ", ".join(allowed).encode())] if allowed else None
        await send_json(send, err.status, client_protocol(protocol).render_error(err), extra)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def query_params(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl((scope.get("query_string") or b"").decode("latin-1")))
