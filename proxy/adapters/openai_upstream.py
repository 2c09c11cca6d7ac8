"""The `openai` upstream kind: canonical requests as Chat Completions calls, to OpenAI or any compatible host.

Also serves OpenAI-compatible hosts (vLLM, DeepSeek, OpenRouter, Azure OpenAI, ...): their
`reasoning_content` / `reasoning` fields map to canonical reasoning, an OpenAI `refusal` to refusal text.
"""

from typing import Any

import orjson

from proxy.adapters import register_upstream
from proxy.adapters.base import StreamDecoder, UpstreamAdapter, UpstreamRequest
from proxy.adapters.openai_chat import PASSTHROUGH, error_from_openai_body, new_completion_id
from proxy.adapters.sse_decoder import SSEDecoder
from proxy.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    GatewayError,
    ImagePart,
    ReasoningConfig,
    ReasoningDelta,
    ReasoningPart,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
)
from proxy.sse import SSEEvent

FINISH_FROM_OPENAI = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                      "function_call": "tool_calls", "content_filter": "content_filter"}


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
        if sse.data.startswith(b"[DONE]"):
            self._end(events)
            return
        chunk = self.payload(sse)
        # Read as the openai SDK reads it: only a non-empty `error` ends the stream.
        if chunk.get("error"):
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            raise GatewayError("upstream", error.get("message") or "the provider reported an error mid-stream")
        choices = chunk.get("choices")
        if not self._started and (chunk.get("id") or choices):
            self._start(chunk, events)
        if chunk.get("usage"):
            self._usage = usage_from_openai(chunk["usage"])
        for choice in choices or ():
            if choice.get("index", 0) != 0:  # with `n` > 1 only the first choice is answered, as when not streamed
                continue
            delta = choice.get("delta")
            if delta:
                self._delta(delta, events)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def _delta(self, delta: dict, events: list) -> None:
        # Nearly every delta is content alone: the two reasoning fields are read only when present.
        if "reasoning_content" in delta or "reasoning" in delta:
            reasoning = _reasoning_of(delta)
            if reasoning:
                events.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if content:
            events.append(TextDelta(content))
        refusal = delta.get("refusal")
        if refusal and isinstance(refusal, str):
            self._refused = True
            events.append(TextDelta(refusal, refusal=True))
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            for call in tool_calls:
                self._tool_call(call, events)

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
