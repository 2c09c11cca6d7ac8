"""Anthropic Messages: the inbound protocol (`POST /v1/messages`, also under `/anthropic`).

Content blocks convert to and from canonical parts here; the `anthropic` upstream kind
(`anthropic_upstream`) and the stream codecs (`anthropic_stream`) reuse these conversions.
"""

import secrets
import string
from dataclasses import replace
from typing import Any

import orjson

from proxy.adapters import register_client
from proxy.adapters.base import ClientProtocol, InboundCall, StreamEncoder
from proxy.adapters.validation import (
    check_bool,
    check_number,
    check_positive_int,
    check_string_list,
    require_dict,
    require_list,
    require_str,
)
from proxy.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    GatewayError,
    ImagePart,
    Message,
    Part,
    ReasoningConfig,
    ReasoningPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Usage,
)

ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "budget_exceeded": "rate_limit_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
    "upstream": "api_error",
    "internal": "api_error",
}
STOP_TO_CANONICAL = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STOP_FROM_CANONICAL = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
    "error": "end_turn",  # an abnormal end has no stop reason of its own in Anthropic's list
}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_ID_ALPHABET = string.ascii_letters + string.digits


def native_id(prefix: str, upstream_id: str = "") -> str:
    """Keep an id already in Anthropic's form; otherwise mint one that looks like Anthropic's."""
    if upstream_id.startswith(prefix):
        return upstream_id
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def message_with_param(err: GatewayError) -> str:
    """Anthropic and Google error bodies have no `param` field: the field's path leads the message instead."""
    if err.param and not err.message.startswith(err.param):
        return f"{err.param}: {err.message}"
    return err.message


def anthropic_error_body(err: GatewayError) -> dict[str, Any]:
    message = message_with_param(err)
    if err.kind == "budget_exceeded" and err.code and not message.startswith(err.code):
        # Anthropic's error types are a closed list (a spent budget is a rate_limit_error): the budget's name
        # leads the message instead, so a client can tell it from a provider's rate limit
        message = f"{err.code}: {message}"
    return {"type": "error", "error": {"type": ERROR_TYPES.get(err.kind, "api_error"), "message": message}}


def usage_to_anthropic(usage: Usage) -> dict[str, Any]:
    """Anthropic's input_tokens excludes cache reads and writes; the canonical count includes them."""
    uncached = usage.input_tokens - usage.cached_tokens - usage.cache_creation_tokens
    out: dict[str, Any] = {
        "input_tokens": max(0, uncached),
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def usage_from_anthropic(raw: Any, base: Usage | None = None) -> Usage:
    """Anthropic usage as canonical usage. With `base`, `raw` is a message_delta's update: its counts are
    cumulative and the ones it omits keep their message_start value."""
    usage = replace(base) if base is not None else Usage()
    if not isinstance(raw, dict):
        return usage
    uncached = usage.input_tokens - usage.cached_tokens - usage.cache_creation_tokens
    if raw.get("input_tokens") is not None:
        uncached = int(raw["input_tokens"])
    if raw.get("cache_read_input_tokens") is not None:
        usage.cached_tokens = int(raw["cache_read_input_tokens"])
    if raw.get("cache_creation_input_tokens") is not None:
        usage.cache_creation_tokens = int(raw["cache_creation_input_tokens"])
    usage.input_tokens = uncached + usage.cached_tokens + usage.cache_creation_tokens
    if raw.get("output_tokens") is not None:
        usage.output_tokens = int(raw["output_tokens"])
    details = raw.get("output_tokens_details")
    if isinstance(details, dict) and details.get("thinking_tokens") is not None:
        usage.reasoning_tokens = int(details["thinking_tokens"])
    return usage


# --- content blocks -> canonical parts -------------------------------------------------------------


def _source_part(source: Any, path: str, document: bool) -> Part:
    source = require_dict(source, f"{path}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = require_str(source.get("media_type"), f"{path}.source.media_type")
        return ImagePart(data=require_str(source.get("data"), f"{path}.source.data"), media_type=media_type)
    if kind == "url":
        default = "application/pdf" if document else None
        return ImagePart(url=require_str(source.get("url"), f"{path}.source.url"), media_type=default)
    if kind == "text" and document:
        return TextPart(str(source.get("data") or ""))
    raise GatewayError("invalid_request", f"unsupported {'document' if document else 'image'} source type {kind!r}",
                       param=f"{path}.source.type")


def _result_content(content: Any, path: str) -> list:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts = []
    for i, block in enumerate(require_list(content, path)):
        block = require_dict(block, f"{path}[{i}]")
        kind = block.get("type")
        if kind == "text":
            parts.append(TextPart(str(block.get("text") or "")))
        elif kind in ("image", "document"):
            parts.append(_source_part(block.get("source"), f"{path}[{i}]", kind == "document"))
        else:
            raise GatewayError("invalid_request", f"unsupported tool_result content type {kind!r}",
                               param=f"{path}[{i}].type")
    return parts


def parse_blocks(content: Any, path: str, *, response: bool = False) -> list[Part]:
    """Message content (a string or content blocks) as canonical parts. In a provider's `response`,
    blocks the canonical model has no place for (server tool calls and results) are skipped."""
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for i, block in enumerate(require_list(content, path)):
        where = f"{path}[{i}]"
        block = require_dict(block, where)
        kind = block.get("type")
        if kind == "text":
            parts.append(TextPart(str(block.get("text") or "")))
        elif kind in ("image", "document"):
            parts.append(_source_part(block.get("source"), where, kind == "document"))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") if block.get("input") is not None else {}).decode()
            parts.append(ToolCall(require_str(block.get("id"), f"{where}.id"),
                                  require_str(block.get("name"), f"{where}.name"), arguments))
        elif kind == "tool_result":
            parts.append(ToolResult(require_str(block.get("tool_use_id"), f"{where}.tool_use_id"),
                                    _result_content(block.get("content"), f"{where}.content"),
                                    is_error=bool(block.get("is_error"))))
        elif kind == "thinking":
            parts.append(ReasoningPart(str(block.get("thinking") or ""), signature=block.get("signature") or None))
        elif kind == "redacted_thinking":
            parts.append(ReasoningPart("", redacted=require_str(block.get("data"), f"{where}.data")))
        elif not response:
            raise GatewayError("invalid_request", f"unsupported content block type {kind!r}", param=f"{where}.type")
    return parts


# --- canonical parts -> content blocks -------------------------------------------------------------


def tool_input(arguments: str) -> Any:
    """Tool-call arguments (JSON text) as Anthropic's `input` object; unreadable text becomes {}."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def image_block(part: ImagePart) -> dict[str, Any]:
    kind = "document" if part.media_type == "application/pdf" else "image"
    if part.data is not None:
        source = {"type": "base64", "media_type": part.media_type or "image/png", "data": part.data}
    else:
        source = {"type": "url", "url": part.url or ""}
    return {"type": kind, "source": source}


def thinking_blocks(parts: list[ReasoningPart]) -> list[dict[str, Any]]:
    """Consecutive reasoning parts as one thinking block (text joined, last signature), redacted ones apart."""
    blocks: list[dict[str, Any]] = []
    text, signature = "", None
    for part in parts:
        if part.redacted:
            blocks.append({"type": "redacted_thinking", "data": part.redacted})
            continue
        text += part.text
        signature = part.signature or signature
    if text or signature:
        blocks.insert(0, {"type": "thinking", "thinking": text, "signature": signature or ""})
    return blocks


def render_blocks(parts: list[Part], *, thinking: bool) -> list[dict[str, Any]]:
    """Canonical parts as content blocks; reasoning only when `thinking`."""
    blocks: list[dict[str, Any]] = []
    reasoning: list[ReasoningPart] = []
    for part in parts:
        if isinstance(part, ReasoningPart):
            reasoning.append(part)
            continue
        if reasoning:
            if thinking:
                blocks.extend(thinking_blocks(reasoning))
            reasoning = []
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            blocks.append({"type": "tool_use", "id": part.id, "name": part.name, "input": tool_input(part.arguments)})
        elif isinstance(part, ImagePart):
            blocks.append(image_block(part))
    if reasoning and thinking:
        blocks.extend(thinking_blocks(reasoning))
    return blocks


# --- inbound ---------------------------------------------------------------------------------------


def _system(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw or None
    texts = []
    for i, block in enumerate(require_list(raw, "system")):
        block = require_dict(block, f"system[{i}]")
        if block.get("type") != "text":
            raise GatewayError("invalid_request", "system blocks must be text", param=f"system[{i}].type")
        texts.append(str(block.get("text") or ""))
    return "\n\n".join(t for t in texts if t) or None


def _tools(body: dict) -> tuple[list[Tool], ToolChoice | None, bool | None]:
    tools = []
    for i, raw in enumerate(require_list(body.get("tools") or [], "tools")):
        raw = require_dict(raw, f"tools[{i}]")
        if raw.get("type") not in (None, "custom"):
            raise GatewayError("invalid_request", f"server tool {raw.get('type')!r} is not supported by this gateway",
                               param=f"tools[{i}].type")
        schema = raw.get("input_schema")
        tools.append(Tool(require_str(raw.get("name"), f"tools[{i}].name"), str(raw.get("description") or ""),
                          require_dict(schema, f"tools[{i}].input_schema")))
    choice = body.get("tool_choice")
    if choice is None:
        return tools, None, None
    choice = require_dict(choice, "tool_choice")
    kind = choice.get("type")
    modes = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}
    if kind not in modes:
        raise GatewayError("invalid_request", "tool_choice.type must be auto, any, tool or none", param="tool_choice.type")
    name = require_str(choice.get("name"), "tool_choice.name") if kind == "tool" else None
    disable = check_bool(choice.get("disable_parallel_tool_use"), "tool_choice.disable_parallel_tool_use")
    return tools, ToolChoice(modes[kind], name), (False if disable else None)


def _reasoning(body: dict) -> ReasoningConfig | None:
    thinking = body.get("thinking")
    effort = None
    output_config = body.get("output_config")
    if isinstance(output_config, dict) and isinstance(output_config.get("effort"), str):
        effort = output_config["effort"]
    if thinking is None:
        return None
    thinking = require_dict(thinking, "thinking")
    kind = thinking.get("type")
    if kind == "enabled":
        budget = check_positive_int(thinking.get("budget_tokens"), "thinking.budget_tokens")
        if budget is None:
            raise GatewayError("invalid_request", "thinking.budget_tokens: Field required", param="thinking.budget_tokens")
        return ReasoningConfig(effort=effort, budget_tokens=budget)
    if kind == "adaptive":
        return ReasoningConfig(effort=effort or "medium")
    if kind == "disabled":
        return None
    raise GatewayError("invalid_request", "thinking.type must be enabled, adaptive or disabled", param="thinking.type")


def _response_format(body: dict) -> ResponseFormat | None:
    config = body.get("output_config")
    if config is None:
        return None
    fmt = require_dict(config, "output_config").get("format")
    if fmt is None:
        return None
    fmt = require_dict(fmt, "output_config.format")
    if fmt.get("type") != "json_schema":
        raise GatewayError("invalid_request", "output_config.format.type must be json_schema",
                           param="output_config.format.type")
    return ResponseFormat("json_schema", require_dict(fmt.get("schema"), "output_config.format.schema"))


def parse_messages(raw: Any) -> list[Message]:
    messages = []
    for i, message in enumerate(require_list(raw, "messages", non_empty=True)):
        message = require_dict(message, f"messages[{i}]")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise GatewayError("invalid_request", f"messages[{i}].role must be user or assistant",
                               param=f"messages[{i}].role")
        messages.append(Message(role, parse_blocks(message.get("content"), f"messages[{i}].content")))
    return messages


def parse_anthropic_request(body: Any, *, need_max_tokens: bool) -> CanonicalRequest:
    body = require_dict(body, "body")
    max_tokens = check_positive_int(body.get("max_tokens"), "max_tokens")
    if need_max_tokens and max_tokens is None:
        raise GatewayError("invalid_request", "max_tokens: Field required", param="max_tokens")
    tools, tool_choice, parallel = _tools(body)
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    extra: dict[str, Any] = {"anthropic_body": body}
    top_k = body.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise GatewayError("invalid_request", "top_k must be a non-negative integer", param="top_k")
        extra["top_k"] = top_k
    return CanonicalRequest(
        model=require_str(body.get("model"), "model"),
        messages=parse_messages(body.get("messages")),
        system=_system(body.get("system")),
        stream=check_bool(body.get("stream"), "stream") or False,
        max_tokens=max_tokens,
        temperature=check_number(body.get("temperature"), "temperature", 0, 1),
        top_p=check_number(body.get("top_p"), "top_p", 0, 1),
        stop=check_string_list(body.get("stop_sequences"), "stop_sequences"),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=_response_format(body),
        reasoning=_reasoning(body),
        user=user if isinstance(user, str) else None,
        extra=extra,
    )


class AnthropicClient(ClientProtocol):
    name = "anthropic"

    def parse_request(self, body: Any, call: InboundCall) -> CanonicalRequest:
        request = parse_anthropic_request(body, need_max_tokens=True)
        if call.headers.get("anthropic-beta"):  # read by the Anthropic upstream only (anthropic_headers)
            request.extra["anthropic_beta"] = call.headers["anthropic-beta"]
        return request

    def render_response(self, response: CanonicalResponse, request: CanonicalRequest) -> dict[str, Any]:
        content = render_blocks(response.parts, thinking=request.reasoning is not None)
        return {
            "id": native_id("msg_", response.id),
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": content,
            "stop_reason": STOP_FROM_CANONICAL.get(response.finish_reason, "end_turn"),
            "stop_sequence": None,
            "usage": usage_to_anthropic(response.usage),
        }

    def stream_encoder(self, request: CanonicalRequest, call: InboundCall) -> StreamEncoder:
        from proxy.adapters.anthropic_stream import AnthropicEncoder

        return AnthropicEncoder(request)

    def render_error(self, err: GatewayError) -> dict[str, Any]:
        return anthropic_error_body(err)


register_client(AnthropicClient())
