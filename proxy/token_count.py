"""Token counting: Anthropic `POST /v1/messages/count_tokens` and Gemini `:countTokens`.

Exact where the chosen provider counts (Anthropic's count_tokens, Gemini's countTokens); otherwise an
estimate from the gateway's tokenizer, marked as such: an `x-ds2-usage: estimated` header and an
`"estimated": true` field (both SDKs ignore fields they do not know). Counting uses no tokens, so the usage
row records none.
"""

import re
from typing import Any

import orjson

from proxy import estimate
from proxy.adapters.anthropic import parse_anthropic_request
from proxy.adapters.anthropic_upstream import (
    anthropic_body,
    anthropic_headers,
    error_from_anthropic_response,
    messages_url,
)
from proxy.adapters.base import InboundCall, UpstreamRequest
from proxy.adapters.gemini import GeminiClient
from proxy.adapters.gemini_parts import get
from proxy.adapters.gemini_upstream import error_from_gemini_response, gemini_body, gemini_headers, model_url
from proxy.adapters.validation import require_dict
from proxy.asgi_io import Receive, Scope, Send, header
from proxy.canonical import CanonicalRequest, GatewayError, Usage
from proxy.side_calls import Answer, SideCall, read_json_object, serve
from routing.selector import Candidate

# Fields Anthropic's count_tokens accepts (it refuses max_tokens, stream, sampling settings...).
ANTHROPIC_COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
                          "mcp_servers", "context_management")
ESTIMATED = ((b"x-ds2-usage", b"estimated"),)


class TokenCount(SideCall):
    """Counting the prompt of a canonical request on whatever provider the route picks."""

    request: CanonicalRequest

    def build(self, candidate: Candidate, upstream_model: str) -> UpstreamRequest | None:
        provider, secret = candidate.target.provider, candidate.credential.secret
        if provider.kind == "anthropic":
            full = anthropic_body(self.request, upstream_model)
            body = {key: full[key] for key in ANTHROPIC_COUNT_FIELDS if key in full}
            return UpstreamRequest(messages_url(provider.base_url, "/v1/messages/count_tokens"),
                                   anthropic_headers(secret, provider.extra_headers,
                                                     self.request.extra.get("anthropic_beta", "")),
                                   orjson.dumps(body))
        if provider.kind == "gemini":
            name = "models/" + upstream_model.removeprefix("models/")
            inner = {**gemini_body(self.request), "model": name}
            return UpstreamRequest(model_url(provider.base_url, upstream_model, "countTokens"),
                                   gemini_headers(secret, provider.extra_headers),
                                   orjson.dumps({"generateContentRequest": inner}))
        return None  # no counting endpoint (OpenAI chat, local models): estimate

    def count(self, kind: str, body: bytes) -> tuple[int, dict[str, Any]]:
        data = read_json_object(body)
        if kind == "anthropic":
            return int(data.get("input_tokens") or 0), data
        return int(get(data, "totalTokens", "total_tokens") or 0), data

    def parse_error(self, kind: str, status: int, headers: dict[str, str], body: bytes) -> GatewayError:
        if kind == "anthropic":
            return error_from_anthropic_response(status, headers, body)
        return error_from_gemini_response(status, body)

    def estimated_tokens(self) -> int:
        return estimate.prompt_tokens(self.request)


class AnthropicCount(TokenCount):
    def __init__(self, body: Any, betas: str = "") -> None:
        self.request = parse_anthropic_request(body, need_max_tokens=False)
        self.model = self.request.model
        if betas:  # the client's `anthropic-beta`, as on /v1/messages (an Anthropic upstream reads it)
            self.request.extra["anthropic_beta"] = betas

    def answer(self, kind: str, body: bytes) -> Answer:
        tokens, data = self.count(kind, body)
        return Answer(data if kind == "anthropic" else {"input_tokens": tokens}, Usage())

    def answer_locally(self, kind: str) -> Answer:
        return Answer({"input_tokens": self.estimated_tokens(), "estimated": True}, Usage(), ESTIMATED)


class GeminiCount(TokenCount):
    def __init__(self, body: Any, model: str) -> None:
        body = require_dict(body, "body")
        inner = get(body, "generateContentRequest", "generate_content_request") or body
        self.request = GeminiClient().parse_request(inner, InboundCall(path_model=model))
        self.model = self.request.model

    def answer(self, kind: str, body: bytes) -> Answer:
        tokens, data = self.count(kind, body)
        return Answer(data if kind == "gemini" else {"totalTokens": tokens}, Usage())

    def answer_locally(self, kind: str) -> Answer:
        return Answer({"totalTokens": self.estimated_tokens(), "estimated": True}, Usage(), ESTIMATED)


async def anthropic_count_tokens(app, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    betas = (header(scope, b"anthropic-beta") or b"").decode("latin-1")
    await serve(app, scope, receive, send, "anthropic", lambda body: AnthropicCount(body, betas))


async def gemini_count_tokens(app, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    model = match.group("model")
    await serve(app, scope, receive, send, "gemini", lambda body: GeminiCount(body, model))
