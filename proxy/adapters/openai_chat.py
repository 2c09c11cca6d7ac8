"""OpenAI Chat Completions: the inbound protocol (`POST /v1/chat/completions`) and the `openai` upstream kind.

Also serves OpenAI-compatible hosts (vLLM, DeepSeek, OpenRouter, ...): their `reasoning_content` /
`reasoning` fields map to canonical reasoning.
"""

import time
import uuid
from typing import Any

import orjson

from proxy.adapters import register_client, register_upstream
from proxy.adapters.base import (
    ClientProtocol,
    InboundCall,
    StreamDecoder,
    StreamEncoder,
    UpstreamAdapter,
    UpstreamRequest,
)
from proxy.adapters.sse_decoder import SSEDecoder
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
from proxy.sse import SSEEvent, sse_data

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
FINISH_FROM_OPENAI = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                      "function_call": "tool_calls", "content_filter": "content_filter"}
# Canonical finishes Chat Completions has no value for: OpenAI itself ends a refusal with "stop" (the text is in
# `refusal`), and "stop" is the nearest valid value for an abnormal end (Gemini MALFORMED_FUNCTION_CALL).
FINISH_TO_OPENAI = {"refusal": "stop", "error": "stop"}
# Fields an OpenAI upstream accepts as-is; kept when the client also speaks OpenAI.
PASSTHROUGH = ("seed", "presence_penalty", "frequency_penalty", "logit_bias", "n", "service_tier")


def openai_error_body(err: GatewayError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": ERROR_TYPES.get(err.kind, "api_error"),
                      "param": err.param, "code": err.code}}


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


class OpenAIChatEncoder(StreamEncoder):
    __slots__ = ("request", "_head")

    def __init__(self, request: CanonicalRequest):
        self.request = request
        self._head = b""

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        choices = orjson.dumps([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])
        return sse_data(self._head + b',"choices":' + choices + b"}")

    def encode(self, event) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            return self._chunk({"refusal": event.text} if event.refusal else {"content": event.text})
        if isinstance(event, ToolCallDelta):
            return self._chunk({"tool_calls": [{"index": event.index, "function": {"arguments": event.arguments}}]})
        if isinstance(event, ReasoningDelta):
            return self._chunk({"reasoning_content": event.text}) if event.text else b""
        if isinstance(event, ToolCallStart):
            return self._chunk({"tool_calls": [{"index": event.index, "id": event.id, "type": "function",
                                                "function": {"name": event.name, "arguments": ""}}]})
        if isinstance(event, StreamStart):
            head = {"id": event.id or new_completion_id(), "object": "chat.completion.chunk", "created": event.created or int(time.time()),
                    "model": event.model}
            self._head = orjson.dumps(head)[:-1]
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


# --- outbound --------------------------------------------------------------------------------------


def _openai_content(parts: list) -> str | list[dict]:
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts)
    out = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            image: dict[str, Any] = {"url": p.as_url()}
            if p.detail:
                image["detail"] = p.detail
            out.append({"type": "image_url", "image_url": image})
    return out


def _openai_messages(request: CanonicalRequest) -> list[dict]:
    out: list[dict] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role == "assistant":
            content = [p for p in message.parts if isinstance(p, TextPart | ImagePart)]
            calls = [p for p in message.parts if isinstance(p, ToolCall)]
            item: dict[str, Any] = {"role": "assistant", "content": _openai_content(content) if content else None}
            if calls:
                item["tool_calls"] = [{"id": c.id, "type": "function",
                                       "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
            out.append(item)
            continue
        others = []
        for p in message.parts:
            if isinstance(p, ToolResult):
                out.append({"role": "tool", "tool_call_id": p.tool_call_id, "content": _openai_content(p.content)})
            else:
                others.append(p)
        if others:
            out.append({"role": "user", "content": _openai_content(others)})
    return out


def _effort(reasoning: ReasoningConfig) -> str:
    if reasoning.effort:
        return reasoning.effort
    budget = reasoning.budget_tokens or 0
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


def openai_chat_body(request: CanonicalRequest, upstream_model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": upstream_model, "messages": _openai_messages(request)}
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # always: usage accounting needs it
    if request.max_tokens is not None:
        use_new = request.extra.get("openai_max_field") == "max_completion_tokens" or request.reasoning
        body["max_completion_tokens" if use_new else "max_tokens"] = request.max_tokens
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop"] = request.stop
    if request.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": t.parameters}} for t in request.tools]
    if request.tool_choice:
        mode = request.tool_choice.mode
        body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice.name}} if mode == "tool" else mode
    if request.response_format and request.response_format.type != "text":
        fmt = request.response_format
        if fmt.type == "json_schema":
            schema = {"name": fmt.name or "response", "schema": fmt.schema or {}}
            if fmt.strict is not None:
                schema["strict"] = fmt.strict
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        else:
            body["response_format"] = {"type": "json_object"}
    if request.reasoning:
        body["reasoning_effort"] = _effort(request.reasoning)
    for key in PASSTHROUGH:
        if key in request.extra:
            body[key] = request.extra[key]
    return body


def finish_from_openai(reason: str | None, *, refused: bool) -> str:
    """OpenAI ends a refusal with "stop"; canonically it is "refusal", so that protocols with a refusal or
    filter finish (Anthropic, Gemini) can say so."""
    finish = FINISH_FROM_OPENAI.get(reason or "stop", "stop")
    return "refusal" if refused and finish == "stop" else finish


def usage_from_openai(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(prompt_details.get("cached_tokens") or raw.get("prompt_cache_hit_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def _reasoning_of(obj: dict) -> str | None:
    value = obj.get("reasoning_content")
    if value is None:
        value = obj.get("reasoning")
    return value if isinstance(value, str) else None


class OpenAIUpstream(UpstreamAdapter):
    kind = "openai"

    def build_request(self, request, *, upstream_model, base_url, secret, extra_headers) -> UpstreamRequest:
        headers = {"authorization": f"Bearer {secret}", "content-type": "application/json", **extra_headers}
        return UpstreamRequest(f"{base_url}/chat/completions", headers,
                               orjson.dumps(openai_chat_body(request, upstream_model)))

    def parse_response(self, body: bytes, request: CanonicalRequest) -> CanonicalResponse:
        try:
            data = orjson.loads(body)
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise GatewayError("upstream", "the provider returned an unreadable response") from exc
        parts: list = []
        reasoning = _reasoning_of(message)
        if reasoning:
            parts.append(ReasoningPart(reasoning))
        if message.get("content"):
            parts.append(TextPart(message["content"]))
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            parts.append(TextPart(refusal, refusal=True))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            parts.append(ToolCall(call.get("id") or "", function.get("name") or "", function.get("arguments") or "{}"))
        return CanonicalResponse(
            id=data.get("id") or "", model=data.get("model") or "", parts=parts,
            finish_reason=finish_from_openai(choice.get("finish_reason"), refused=bool(refusal)),
            usage=usage_from_openai(data.get("usage")), created=int(data.get("created") or 0),
        )

    def stream_decoder(self, request: CanonicalRequest) -> StreamDecoder:
        return OpenAIChatDecoder()

    def parse_error(self, status: int, headers: dict[str, str], body: bytes) -> GatewayError:
        return error_from_openai_body(status, headers, body)


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


class OpenAIChatDecoder(SSEDecoder):
    """Reads `chat.completion.chunk` streams. `[DONE]` ends the stream; a stream that stops without it
    still ends normally once a finish reason arrived (some compatible hosts never send `[DONE]`).

    The stream starts with the first chunk that names its id or carries choices: Azure OpenAI opens with a
    content-filter preamble whose id, model and choices are empty."""

    __slots__ = ("_started", "_finish", "_usage", "_tool_index", "_done", "_refused")

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._finish: str | None = None
        self._usage = Usage()
        self._tool_index: dict[int, int] = {}
        self._done = False
        self._refused = False

    def end(self) -> list:
        events: list = []
        if not self._done:
            if self._finish is None:
                raise GatewayError("upstream", "the provider's stream ended before it finished")
            self._end(events)
        return events

    def _end(self, events: list) -> None:
        if not self._done:
            self._done = True
            self._start({}, events)
            events.append(StreamEnd(finish_from_openai(self._finish, refused=self._refused), self._usage))

    def _start(self, chunk: dict, events: list) -> None:
        if not self._started:
            self._started = True
            events.append(StreamStart(chunk.get("id") or new_completion_id(), chunk.get("model") or "",
                                      int(chunk.get("created") or 0)))

    def handle(self, sse: SSEEvent, events: list) -> None:
        if self._done:
            return
        if sse.data.startswith("[DONE]"):
            self._end(events)
            return
        chunk = self.payload(sse)
        # Read as the openai SDK reads it: only a non-empty `error` ends the stream.
        if chunk.get("error"):
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            raise GatewayError("upstream", error.get("message") or "the provider reported an error mid-stream")
        if chunk.get("id") or chunk.get("choices"):
            self._start(chunk, events)
        if chunk.get("usage"):
            self._usage = usage_from_openai(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:  # with `n` > 1 only the first choice is answered, as when not streamed
                continue
            delta = choice.get("delta") or {}
            reasoning = _reasoning_of(delta)
            if reasoning:
                events.append(ReasoningDelta(reasoning))
            content = delta.get("content")
            if content:
                events.append(TextDelta(content))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._refused = True
                events.append(TextDelta(refusal, refusal=True))
            for call in delta.get("tool_calls") or ():
                self._tool_call(call, events)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def _tool_call(self, call: dict, events: list) -> None:
        upstream_index = call.get("index", 0)
        function = call.get("function") or {}
        index = self._tool_index.get(upstream_index)
        if index is None:
            index = self._tool_index[upstream_index] = len(self._tool_index)
            events.append(ToolCallStart(index, call.get("id") or f"call_{index}", function.get("name") or ""))
        if function.get("arguments"):
            events.append(ToolCallDelta(index, function["arguments"]))


register_upstream(OpenAIUpstream())
