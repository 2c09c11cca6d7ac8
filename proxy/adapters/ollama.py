"""Ollama: the inbound protocols `POST /api/chat` and `POST /api/generate` (NDJSON streaming, on by default).

Ollama's wire format has no tool-call ids, so ids are made up on the way in (`call_<message>_<n>`) and
tool results are matched to the latest unanswered call of the same function name. Tool calls stream as
whole calls (Ollama sends parsed argument objects), so argument fragments are gathered until the call
is complete. Ollama has no tool-call finish reason: a tool call ends with done_reason "stop", as in Ollama.
"""

import base64
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.adapters import register_client
from proxy.adapters.base import ClientProtocol, InboundCall, StreamEncoder
from proxy.adapters.validation import (
    check_number,
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
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
)

DONE_REASONS = {"length": "length"}  # everything else (stop, tool_calls, content_filter, refusal, error) reads "stop"
THINK_LEVELS = ("low", "medium", "high")
IMAGE_SIGNATURES = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
                    (b"RIFF", "image/webp"))


def _bad(param: str, message: str) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def image_part(data: Any, path: str) -> ImagePart:
    """Ollama images are bare base64 strings; the media type is read from the first bytes."""
    data = require_str(data, path)
    if data.startswith("data:"):
        return ImagePart.from_url(data)
    try:
        head = base64.b64decode(data[:32] + "=" * (-len(data[:32]) % 4), validate=False)
    except ValueError:
        raise _bad(path, f"{path} is not base64 image data") from None
    media_type = next((kind for magic, kind in IMAGE_SIGNATURES if head.startswith(magic)), "image/png")
    return ImagePart(data=data, media_type=media_type)


def _images(raw: Any, path: str) -> list[ImagePart]:
    return [image_part(item, f"{path}[{i}]") for i, item in enumerate(require_list(raw or [], path))]


def _text(raw: Any, path: str) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise _bad(path, f"{path} must be a string")
    return raw


def _parse_messages(raw_messages: Any) -> tuple[str | None, list[Message]]:
    system: list[str] = []
    messages: list[Message] = []
    unanswered: list[ToolCall] = []
    for i, raw in enumerate(require_list(raw_messages, "messages", non_empty=True)):
        path = f"messages[{i}]"
        raw = require_dict(raw, path)
        role = raw.get("role")
        content = _text(raw.get("content"), f"{path}.content")
        if role == "system":
            system.append(content)
        elif role == "user":
            parts: list = [TextPart(content)] if content else []
            messages.append(Message("user", parts + _images(raw.get("images"), f"{path}.images")))
        elif role == "assistant":
            parts = []
            if isinstance(raw.get("thinking"), str) and raw["thinking"]:
                parts.append(ReasoningPart(raw["thinking"]))
            if content:
                parts.append(TextPart(content))
            for j, call in enumerate(require_list(raw.get("tool_calls") or [], f"{path}.tool_calls")):
                function = require_dict(require_dict(call, f"{path}.tool_calls[{j}]").get("function"),
                                        f"{path}.tool_calls[{j}].function")
                arguments = function.get("arguments") or {}
                tool_call = ToolCall(str(call.get("id") or f"call_{i}_{j}"),
                                     require_str(function.get("name"), f"{path}.tool_calls[{j}].function.name"),
                                     arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode())
                parts.append(tool_call)
                unanswered.append(tool_call)
            messages.append(Message("assistant", parts))
        elif role == "tool":
            name = raw.get("tool_name") or raw.get("name")
            call = next((c for c in reversed(unanswered) if c.name == name), unanswered[0] if unanswered else None)
            if call is not None:
                unanswered.remove(call)
            call_id = raw.get("tool_call_id") or (call.id if call else f"call_{i}")
            result = ToolResult(str(call_id), [TextPart(content)], name=name or (call.name if call else None))
            if messages and messages[-1].role == "user" and all(isinstance(p, ToolResult) for p in messages[-1].parts):
                messages[-1].parts.append(result)
            else:
                messages.append(Message("user", [result]))
        else:
            raise _bad(f"{path}.role", f"unknown message role {role!r}")
    return ("\n\n".join(s for s in system if s) or None), messages


def _parse_tools(raw_tools: Any) -> list[Tool]:
    tools = []
    for i, raw in enumerate(require_list(raw_tools or [], "tools")):
        raw = require_dict(raw, f"tools[{i}]")
        if raw.get("type", "function") != "function":
            raise _bad(f"tools[{i}].type", f"unsupported tool type {raw.get('type')!r}")
        function = require_dict(raw.get("function"), f"tools[{i}].function")
        tools.append(Tool(require_str(function.get("name"), f"tools[{i}].function.name"),
                          function.get("description") or "",
                          function.get("parameters") or {"type": "object", "properties": {}}))
    return tools


def _parse_format(raw: Any) -> ResponseFormat | None:
    if raw in (None, ""):
        return None
    if raw == "json":
        return ResponseFormat("json_object")
    if isinstance(raw, dict):
        return ResponseFormat("json_schema", raw, "response")
    raise _bad("format", "format must be \"json\" or a JSON schema object")


def _parse_think(raw: Any) -> ReasoningConfig | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        return ReasoningConfig(effort="medium")
    if raw in THINK_LEVELS:
        return ReasoningConfig(effort=raw)
    raise _bad("think", "think must be true, false, \"low\", \"medium\" or \"high\"")


def _common(body: dict, messages: list[Message], system: str | None, tools: list[Tool]) -> CanonicalRequest:
    """The fields /api/chat and /api/generate share: options, format, think, stream (default on)."""
    options = require_dict(body.get("options") or {}, "options")
    num_predict = options.get("num_predict")
    if num_predict is not None and (isinstance(num_predict, bool) or not isinstance(num_predict, int)):
        raise _bad("options.num_predict", "options.num_predict must be a whole number")
    stop = options.get("stop")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise _bad("stream", "stream must be a boolean")
    # When the request arrived: Ollama reports durations, and the plain reply has no stream start to time.
    extra: dict[str, Any] = {"ollama_think": body.get("think"), "ollama_started_ns": time.perf_counter_ns()}
    if isinstance(options.get("seed"), int):
        extra["seed"] = options["seed"]
    return CanonicalRequest(
        model=require_str(body.get("model"), "model"),
        messages=messages,
        system=system,
        stream=stream,
        max_tokens=num_predict if num_predict and num_predict > 0 else None,  # -1 / -2 mean "no limit"
        temperature=check_number(options.get("temperature"), "options.temperature", 0, 2),
        top_p=check_number(options.get("top_p"), "options.top_p", 0, 1),
        stop=[stop] if isinstance(stop, str) else check_string_list(stop, "options.stop"),
        tools=tools,
        tool_choice=ToolChoice("auto") if tools else None,
        response_format=_parse_format(body.get("format")),
        reasoning=_parse_think(body.get("think")),
        include_usage=True,
        extra=extra,
    )


def _call_arguments(arguments: str) -> Any:
    try:
        return orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}  # Ollama's schema only has objects; an unparsable provider answer cannot be expressed


def _final_fields(finish_reason: str, usage: Usage, request: CanonicalRequest) -> dict[str, Any]:
    """The last line's done_reason and counts; all time is reported as generation time (no model load)."""
    total = max(time.perf_counter_ns() - request.extra.get("ollama_started_ns", 0), 1)
    return {"done_reason": DONE_REASONS.get(finish_reason, "stop"), "total_duration": total, "load_duration": 0,
            "prompt_eval_count": usage.input_tokens, "prompt_eval_duration": 0,
            "eval_count": usage.output_tokens, "eval_duration": total}


def ollama_object(request: CanonicalRequest, chat: bool, content: str = "", thinking: str = "",
                  tool_calls: list | None = None, final: dict | None = None) -> dict[str, Any]:
    """One /api/chat (`message`) or /api/generate (`response`) object, streamed line or whole reply."""
    body: dict[str, Any] = {"model": request.model, "created_at": now_rfc3339()}
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        body["message"] = message
    else:
        body["response"] = content
        if thinking:
            body["thinking"] = thinking
    body["done"] = final is not None
    if final:
        body.update(final)
    return body


def ollama_tool_call(index: int, call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": _call_arguments(call.arguments)}}


def error_body(err: GatewayError) -> dict[str, str]:
    return {"error": err.message}


class OllamaEncoder(StreamEncoder):
    """One JSON object per line; the last one has done: true, the finish reason and the counts."""

    content_type = b"application/x-ndjson"

    def __init__(self, request: CanonicalRequest, chat: bool) -> None:
        self.request = request
        self.chat = chat
        self.show_thinking = request.extra.get("ollama_think") is not False
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, argument fragments...]

    def _line(self, content: str = "", thinking: str = "", tool_calls: list | None = None,
              final: dict | None = None) -> bytes:
        return orjson.dumps(ollama_object(self.request, self.chat, content, thinking, tool_calls, final)) + b"\n"

    def _flush_calls(self) -> bytes:
        if not self.calls or not self.chat:
            return b""
        calls = [ollama_tool_call(index, ToolCall(c[0], c[1], "".join(c[2:])))
                 for index, c in sorted(self.calls.items())]
        self.calls = {}
        return self._line(tool_calls=calls)

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._line(event.text) if event.text else b""
        if isinstance(event, ReasoningDelta):
            return self._line(thinking=event.text) if event.text and self.show_thinking else b""
        if isinstance(event, ToolCallStart):
            self.calls[event.index] = [event.id, event.name]
        elif isinstance(event, ToolCallDelta):
            self.calls.setdefault(event.index, [f"call_{event.index}", ""]).append(event.arguments)
        elif isinstance(event, StreamEnd):
            return self._flush_calls() + self._line(final=_final_fields(event.finish_reason, event.usage,
                                                                        self.request))
        return b""

    def error(self, err: GatewayError) -> bytes:
        return orjson.dumps(error_body(err)) + b"\n"


class OllamaChatClient(ClientProtocol):
    name = "ollama_chat"
    chat = True

    def parse_request(self, body: Any, call: InboundCall) -> CanonicalRequest:
        body = require_dict(body, "body")
        system, messages = _parse_messages(body.get("messages"))
        return _common(body, messages, system, _parse_tools(body.get("tools")))

    def render_response(self, response: CanonicalResponse, request: CanonicalRequest) -> dict:
        text = "".join(p.text for p in response.parts if isinstance(p, TextPart))
        thinking = "".join(p.text for p in response.parts if isinstance(p, ReasoningPart))
        calls = [p for p in response.parts if isinstance(p, ToolCall)]
        if request.extra.get("ollama_think") is False:
            thinking = ""
        tool_calls = [ollama_tool_call(i, c) for i, c in enumerate(calls)]
        final = _final_fields(response.finish_reason, response.usage, request)
        return ollama_object(request, self.chat, text, thinking, tool_calls, final)

    def stream_encoder(self, request: CanonicalRequest, call: InboundCall) -> StreamEncoder:
        return OllamaEncoder(request, self.chat)

    def render_error(self, err: GatewayError) -> dict:
        return error_body(err)


class OllamaGenerateClient(OllamaChatClient):
    name = "ollama_generate"
    chat = False

    def parse_request(self, body: Any, call: InboundCall) -> CanonicalRequest:
        body = require_dict(body, "body")
        for field in ("suffix", "context", "template"):
            if body.get(field):
                raise _bad(field, f"{field} is not supported by this gateway: send the conversation to /api/chat")
        prompt = _text(body.get("prompt"), "prompt")
        parts: list = ([TextPart(prompt)] if prompt else []) + _images(body.get("images"), "images")
        if not parts:
            raise _bad("prompt", "prompt must be a non-empty string (loading a model is not needed here)")
        system = _text(body.get("system"), "system") or None
        return _common(body, [Message("user", parts)], system, [])


register_client(OllamaChatClient())
register_client(OllamaGenerateClient())
