"""The `anthropic` upstream kind: canonical requests as Anthropic Messages calls.

A request that arrived in Anthropic's own format is forwarded as the client wrote it (model, stream and
max_tokens aside), so everything the canonical model does not carry (cache_control, citations...) survives.
"""

import re
from typing import Any

import orjson

from proxy.adapters import register_upstream
from proxy.adapters.anthropic import (
    IMAGE_TYPES,
    STOP_TO_CANONICAL,
    image_block,
    parse_blocks,
    thinking_blocks,
    tool_input,
    usage_from_anthropic,
)
from proxy.adapters.anthropic_stream import AnthropicDecoder, error_from_anthropic
from proxy.adapters.base import StreamDecoder, UpstreamAdapter, UpstreamRequest
from proxy.adapters.signatures import is_foreign_signature
from proxy.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    GatewayError,
    ImagePart,
    Message,
    ReasoningConfig,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; other protocols make it optional
MIN_THINKING_BUDGET = 1024
EFFORT_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
JSON_INSTRUCTION = "Respond only with a single valid JSON object."
BETA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # e.g. "interleaved-thinking-2025-05-14"


def messages_url(base_url: str, path: str = "/v1/messages") -> str:
    base = base_url.rstrip("/")
    return (base[:-3] if base.endswith("/v1") else base) + path


def anthropic_headers(secret: str, extra_headers: dict, client_betas: str = "") -> dict[str, str]:
    """The gateway always speaks API version 2023-06-01, the one its conversions and stream decoder are written
    for, whatever version an Anthropic client sent. The client's `anthropic-beta` names are added to those the
    provider is configured with (both kept, well-formed names only)."""
    headers = {"x-api-key": secret, "anthropic-version": API_VERSION, "content-type": "application/json"}
    configured = ""
    for name, value in extra_headers.items():
        if name.lower() == "anthropic-beta":
            configured = str(value)
        else:
            headers[name] = value
    betas = _beta_names(f"{configured},{client_betas}")
    if betas:
        headers["anthropic-beta"] = ",".join(betas)
    return headers


def _beta_names(header: str) -> list[str]:
    names: list[str] = []
    for raw in header.split(","):
        name = raw.strip()
        if name and BETA_NAME.fullmatch(name) and name not in names:
            names.append(name)
    return names


def _media_block(part: ImagePart) -> dict[str, Any]:
    media_type = part.media_type or ""
    if part.data is not None and not (media_type in IMAGE_TYPES or media_type == "application/pdf"):
        raise GatewayError("invalid_request", f"this model's provider accepts images and PDF documents, not "
                           f"{media_type or 'untyped data'}", param="messages")
    return image_block(part)


def _result_block(result: ToolResult) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for part in result.content:
        if isinstance(part, TextPart):
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            content.append(_media_block(part))
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": result.tool_call_id, "content": content}
    if result.is_error:
        block["is_error"] = True
    return block


def _message_blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    reasoning: list[ReasoningPart] = []
    for part in message.parts:
        if isinstance(part, ReasoningPart):
            # Anthropic verifies thinking signatures: unsigned thoughts or another provider's are dropped.
            if part.redacted or (part.signature and not is_foreign_signature(part.signature)):
                reasoning.append(part)
            continue
        if reasoning:
            blocks.extend(thinking_blocks(reasoning))
            reasoning = []
        if isinstance(part, TextPart):
            if part.text:  # the API refuses empty text blocks
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_media_block(part))
        elif isinstance(part, ToolCall):
            blocks.append({"type": "tool_use", "id": part.id, "name": part.name, "input": tool_input(part.arguments)})
        elif isinstance(part, ToolResult):
            blocks.append(_result_block(part))
    if reasoning:
        blocks.extend(thinking_blocks(reasoning))
    # The API wants tool results first in a user turn.
    blocks.sort(key=lambda b: b["type"] != "tool_result")
    return blocks


def anthropic_messages(request: CanonicalRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in request.messages:
        blocks = _message_blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == message.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": message.role, "content": blocks})
    return out


def _thinking(reasoning: ReasoningConfig, max_tokens: int) -> dict[str, Any] | None:
    budget = reasoning.budget_tokens or EFFORT_BUDGETS.get(reasoning.effort or "medium", 8192)
    budget = max(MIN_THINKING_BUDGET, min(budget, max_tokens - 1))
    return {"type": "enabled", "budget_tokens": budget} if budget < max_tokens else None


def anthropic_body(request: CanonicalRequest, upstream_model: str) -> dict[str, Any]:
    native = request.extra.get("anthropic_body")
    if isinstance(native, dict):
        body = dict(native)
        body["model"] = upstream_model
        body["max_tokens"] = request.max_tokens or DEFAULT_MAX_TOKENS
        body.pop("stream", None)
        if request.stream:
            body["stream"] = True
        return body
    max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {"model": upstream_model, "max_tokens": max_tokens, "messages": anthropic_messages(request)}
    system = request.system or ""
    fmt = request.response_format
    if fmt and fmt.type == "json_schema" and fmt.schema is not None:
        body["output_config"] = {"format": {"type": "json_schema", "schema": fmt.schema}}
    elif fmt and fmt.type != "text":
        system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
    if system:
        body["system"] = system
    if request.stream:
        body["stream"] = True
    if request.stop:
        body["stop_sequences"] = request.stop
    choice = request.tool_choice
    forced = choice is not None and choice.mode in ("required", "tool")
    thinking = _thinking(request.reasoning, max_tokens) if request.reasoning and not forced else None
    if thinking:
        body["thinking"] = thinking  # the API then refuses temperature / top_p / top_k changes
    else:
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)  # OpenAI's 0..2 range, Anthropic's 0..1
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if "top_k" in request.extra:
            body["top_k"] = request.extra["top_k"]
    if request.tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                         for t in request.tools]
    if choice or request.parallel_tool_calls is False:
        mode = choice.mode if choice else "auto"
        tool_choice: dict[str, Any] = {"type": {"required": "any"}.get(mode, mode)}
        if mode == "tool":
            tool_choice["name"] = choice.name
        if request.parallel_tool_calls is False and mode != "none":
            tool_choice["disable_parallel_tool_use"] = True
        if request.tools or mode == "none":
            body["tool_choice"] = tool_choice
    if request.user:
        body["metadata"] = {"user_id": request.user}
    return body


class AnthropicUpstream(UpstreamAdapter):
    kind = "anthropic"

    def build_request(self, request, *, upstream_model, base_url, secret, extra_headers) -> UpstreamRequest:
        return UpstreamRequest(messages_url(base_url),
                               anthropic_headers(secret, extra_headers, request.extra.get("anthropic_beta", "")),
                               orjson.dumps(anthropic_body(request, upstream_model)))

    def parse_response(self, body: bytes, request: CanonicalRequest) -> CanonicalResponse:
        try:
            data = orjson.loads(body)
            content = data["content"]
            parts = parse_blocks(content, "content", response=True)
        except (orjson.JSONDecodeError, KeyError, TypeError, GatewayError) as exc:
            raise GatewayError("upstream", "the provider returned an unreadable response") from exc
        return CanonicalResponse(
            id=str(data.get("id") or ""), model=str(data.get("model") or ""), parts=parts,
            finish_reason=STOP_TO_CANONICAL.get(data.get("stop_reason") or "end_turn", "stop"),
            usage=usage_from_anthropic(data.get("usage")),
        )

    def stream_decoder(self, request: CanonicalRequest) -> StreamDecoder:
        return AnthropicDecoder()

    def parse_error(self, status: int, headers: dict[str, str], body: bytes) -> GatewayError:
        return error_from_anthropic_response(status, headers, body)


def error_from_anthropic_response(status: int, headers: dict[str, str], body: bytes) -> GatewayError:
    try:
        data = orjson.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
    except orjson.JSONDecodeError:
        error = None
    if not isinstance(error, dict):
        error = {"message": f"upstream returned HTTP {status}"}
    err = error_from_anthropic(error, status)
    retry_after = _header(headers, "retry-after")
    if retry_after:
        try:
            err.retry_after = float(retry_after)
        except ValueError:
            pass
    return err


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


register_upstream(AnthropicUpstream())
