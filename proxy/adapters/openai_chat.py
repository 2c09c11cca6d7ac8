"""OpenAI Chat Completions: the inbound protocol (`POST /v1/chat/completions`) and OpenAI's error shape.

The `openai` upstream kind (OpenAI and compatible hosts) is in `openai_upstream`.
"""

import time
import uuid
from typing import Any

import orjson

from proxy.adapters import register_client
from proxy.adapters.base import (
    ClientProtocol,
    InboundCall,
    StreamEncoder,
)
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
    ReasoningConfig,
    ReasoningDelta,
    ReasoningPart,
    ResponseFormat,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    kind_for_status,
)
from proxy.sse import sse_data

ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "too_large": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "budget_exceeded": "budget_exceeded",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
    "upstream": "upstream_error",
    "internal": "api_error",
}
# Canonical finishes Chat Completions has no value for: OpenAI itself ends a refusal with "stop" (the text is in
# `refusal`), and "stop" is the nearest valid value for an abnormal end (Gemini MALFORMED_FUNCTION_CALL).
FINISH_TO_OPENAI = {"refusal": "stop", "error": "stop"}
# Fields an OpenAI upstream accepts as-is; kept when the client also speaks OpenAI.
PASSTHROUGH = ("seed", "presence_penalty", "frequency_penalty", "logit_bias", "n", "service_tier")


def openai_error_body(err: GatewayError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": ERROR_TYPES.get(err.kind, "api_error"),
                      "param": err.param, "code": err.code}}


def error_from_openai_body(status: int, headers: dict[str, str], body: bytes) -> GatewayError:
    message, param, code = f"upstream returned HTTP {status}", None, None
    try:
        error = orjson.loads(body).get("error")
        if isinstance(error, dict):
            message = error.get("message") or message
            param, code = error.get("param"), error.get("code")
        elif isinstance(error, str):
            message = error
    except (orjson.JSONDecodeError, AttributeError):
        pass
    retry_after = headers.get("retry-after")
    return GatewayError(kind_for_status(status), message, status=status, param=param,
                        code=code if isinstance(code, str) else None,
                        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None)


# --- inbound ---------------------------------------------------------------------------------------


def _content_parts(content: Any, path: str) -> list:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts = []
    for i, item in enumerate(require_list(content, path)):
        item = require_dict(item, f"{path}[{i}]")
        kind = item.get("type")
        if kind == "text":
            parts.append(TextPart(require_str(item.get("text"), f"{path}[{i}].text")))
        elif kind == "image_url":
            image = item.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            detail = image.get("detail") if isinstance(image, dict) else None
            parts.append(ImagePart.from_url(require_str(url, f"{path}[{i}].image_url.url"), detail))
        elif kind == "refusal":
            parts.append(TextPart(str(item.get("refusal", ""))))
        else:
            raise GatewayError("invalid_request", f"unsupported content part type {kind!r}", param=f"{path}[{i}].type")
    return parts


def _parse_messages(raw_messages: Any) -> tuple[str | None, list[Message]]:
    system: list[str] = []
    messages: list[Message] = []
    for i, raw in enumerate(require_list(raw_messages, "messages", non_empty=True)):
        path = f"messages[{i}]"
        raw = require_dict(raw, path)
        role = raw.get("role")
        if role in ("system", "developer"):
            system.extend(p.text for p in _content_parts(raw.get("content"), f"{path}.content") if isinstance(p, TextPart))
        elif role == "user":
            messages.append(Message("user", _content_parts(raw.get("content"), f"{path}.content")))
        elif role == "assistant":
            parts: list = []
            reasoning = raw.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                parts.append(ReasoningPart(reasoning))
            parts.extend(_content_parts(raw.get("content"), f"{path}.content"))
            refusal = raw.get("refusal")
            if isinstance(refusal, str) and refusal:  # an earlier refusal sent back: the model said it
                parts.append(TextPart(refusal))
            for j, call in enumerate(require_list(raw.get("tool_calls") or [], f"{path}.tool_calls")):
                call = require_dict(call, f"{path}.tool_calls[{j}]")
                function = require_dict(call.get("function"), f"{path}.tool_calls[{j}].function")
                arguments = function.get("arguments") or "{}"
                if not isinstance(arguments, str):
                    arguments = orjson.dumps(arguments).decode()
                parts.append(ToolCall(str(call.get("id") or f"call_{i}_{j}"),
                                      require_str(function.get("name"), f"{path}.tool_calls[{j}].function.name"),
                                      arguments))
            messages.append(Message("assistant", parts))
        elif role in ("tool", "function"):
            call_id = raw.get("tool_call_id") or raw.get("name") or ""
            result = ToolResult(str(call_id), [p for p in _content_parts(raw.get("content"), f"{path}.content")],
                                name=raw.get("name"))
            if messages and messages[-1].role == "user" and all(isinstance(p, ToolResult) for p in messages[-1].parts):
                messages[-1].parts.append(result)
            else:
                messages.append(Message("user", [result]))
        else:
            raise GatewayError("invalid_request", f"unknown message role {role!r}", param=f"{path}.role")
    return ("\n\n".join(system) if system else None), messages


def _parse_tools(body: dict) -> tuple[list[Tool], ToolChoice | None]:
    tools = []
    for i, raw in enumerate(require_list(body.get("tools") or [], "tools")):
        raw = require_dict(raw, f"tools[{i}]")
        if raw.get("type", "function") != "function":
            raise GatewayError("invalid_request", f"unsupported tool type {raw.get('type')!r}", param=f"tools[{i}].type")
        function = require_dict(raw.get("function"), f"tools[{i}].function")
        tools.append(Tool(require_str(function.get("name"), f"tools[{i}].function.name"),
                          function.get("description") or "",
                          function.get("parameters") or {"type": "object", "properties": {}}))
    choice = body.get("tool_choice")
    if choice is None:
        return tools, None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise GatewayError("invalid_request", "tool_choice must be auto, none, required or a function", param="tool_choice")
        return tools, ToolChoice(choice)
    choice = require_dict(choice, "tool_choice")
    name = (choice.get("function") or {}).get("name")
    return tools, ToolChoice("tool", require_str(name, "tool_choice.function.name"))


def _parse_response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    raw = require_dict(raw, "response_format")
    kind = raw.get("type")
    if kind == "json_schema":
        spec = require_dict(raw.get("json_schema"), "response_format.json_schema")
        return ResponseFormat("json_schema", spec.get("schema"), spec.get("name"), spec.get("strict"))
    if kind in ("json_object", "text"):
        return ResponseFormat(kind)
    raise GatewayError("invalid_request", f"unsupported response_format type {kind!r}", param="response_format.type")


class OpenAIChatClient(ClientProtocol):
    name = "openai_chat"

    def parse_request(self, body: Any, call: InboundCall) -> CanonicalRequest:
        body = require_dict(body, "body")
        system, messages = _parse_messages(body.get("messages"))
        tools, tool_choice = _parse_tools(body)
        stop = body.get("stop")
        max_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        effort = body.get("reasoning_effort")
        stream_options = body.get("stream_options") or {}
        extra = {key: body[key] for key in PASSTHROUGH if key in body}
        extra["openai_max_field"] = max_field
        return CanonicalRequest(
            model=require_str(body.get("model"), "model"),
            messages=messages,
            system=system,
            stream=check_bool(body.get("stream"), "stream") or False,
            max_tokens=check_positive_int(body.get(max_field), max_field),
            temperature=check_number(body.get("temperature"), "temperature", 0, 2),
            top_p=check_number(body.get("top_p"), "top_p", 0, 1),
            stop=[stop] if isinstance(stop, str) else check_string_list(stop, "stop"),
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=check_bool(body.get("parallel_tool_calls"), "parallel_tool_calls"),
            response_format=_parse_response_format(body.get("response_format")),
            reasoning=ReasoningConfig(effort=str(effort)) if effort else None,
            include_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
            user=body.get("user") if isinstance(body.get("user"), str) else None,
            extra=extra,
        )

    def render_response(self, response: CanonicalResponse, request: CanonicalRequest) -> dict:
        text = "".join(p.text for p in response.parts if isinstance(p, TextPart) and not p.refusal)
        refusal = "".join(p.text for p in response.parts if isinstance(p, TextPart) and p.refusal)
        reasoning = "".join(p.text for p in response.parts if isinstance(p, ReasoningPart))
        calls = [p for p in response.parts if isinstance(p, ToolCall)]
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not (calls or refusal) else None}
        if refusal:
            message["refusal"] = refusal
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
            ]
        return {
            "id": response.id or new_completion_id(),
            "object": "chat.completion",
            "created": response.created or int(time.time()),
            "model": response.model,
            "choices": [{"index": 0, "message": message, "finish_reason": openai_finish(response.finish_reason),
                         "logprobs": None}],
            "usage": openai_usage(response.usage),
        }

    def stream_encoder(self, request: CanonicalRequest, call: InboundCall) -> StreamEncoder:
        return OpenAIChatEncoder(request)

    def render_error(self, err: GatewayError) -> dict:
        return openai_error_body(err)


def new_completion_id() -> str:
    """For a provider that gave no id (Azure's first stream chunk has an empty one)."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def openai_finish(reason: str) -> str:
    return FINISH_TO_OPENAI.get(reason, reason)


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


# The end of a text delta's frame: byte for byte what OpenAIChatEncoder._chunk() writes after the text.
_DELTA_END = b'},"finish_reason":null,"logprobs":null}]}\n\n'


class OpenAIChatEncoder(StreamEncoder):
    __slots__ = ("request", "_head", "_content", "_reasoning")

    def __init__(self, request: CanonicalRequest):
        self.request = request
        self._set_head(b"")

    def _set_head(self, head: bytes) -> None:
        self._head = head
        # Text and reasoning deltas are nearly all of a stream: their frames are fixed bytes around the
        # JSON-encoded text, which saves building and serialising the chunk's dicts for each one.
        choice = b"data: " + head + b',"choices":[{"index":0,"delta":{'
        self._content = choice + b'"content":'
        self._reasoning = choice + b'"reasoning_content":'

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        choices = orjson.dumps([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])
        return sse_data(self._head + b',"choices":' + choices + b"}")

    def encode(self, event) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            if event.refusal:
                return self._chunk({"refusal": event.text})
            return self._content + orjson.dumps(event.text) + _DELTA_END
        if isinstance(event, ToolCallDelta):
            return self._chunk({"tool_calls": [{"index": event.index, "function": {"arguments": event.arguments}}]})
        if isinstance(event, ReasoningDelta):
            return self._reasoning + orjson.dumps(event.text) + _DELTA_END if event.text else b""
        if isinstance(event, ToolCallStart):
            return self._chunk({"tool_calls": [{"index": event.index, "id": event.id, "type": "function",
                                                "function": {"name": event.name, "arguments": ""}}]})
        if isinstance(event, StreamStart):
            head = {"id": event.id or new_completion_id(), "object": "chat.completion.chunk", "created": event.created or int(time.time()),
                    "model": event.model}
            self._set_head(orjson.dumps(head)[:-1])
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, StreamEnd):
            out = self._chunk({}, openai_finish(event.finish_reason))
            if self.request.include_usage:
                out += sse_data(self._head + b',"choices":[],"usage":' + orjson.dumps(openai_usage(event.usage)) + b"}")
            return out + b"data: [DONE]\n\n"
        return b""

    def error(self, err: GatewayError) -> bytes:
        return sse_data(orjson.dumps(openai_error_body(err)))


register_client(OpenAIChatClient())
