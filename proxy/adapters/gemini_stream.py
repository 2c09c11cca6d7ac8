"""Gemini streams: canonical events -> GenerateContentResponse chunks (client side), and back (upstream side).

To a client: `data: {...}\\r\\n\\r\\n` events with `alt=sse`, else one JSON array written element by element.
Each chunk holds the new parts; the last one carries finishReason and usageMetadata. A function call is a
whole part in Gemini (no argument fragments), so its argument fragments are gathered until the call ends.
"""

import re
from typing import Any

import orjson

from proxy.adapters.base import StreamEncoder
from proxy.adapters.gemini import gemini_error_body, response_id
from proxy.adapters.gemini_parts import (
    FINISH_FROM_CANONICAL,
    call_id,
    finish_to_canonical,
    function_call_part,
    get,
    usage_from_gemini,
    usage_to_gemini,
)
from proxy.adapters.signatures import from_gemini, to_gemini_client
from proxy.adapters.sse_decoder import SSEDecoder
from proxy.canonical import (
    CanonicalRequest,
    GatewayError,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    kind_for_status,
)
from proxy.sse import SSEEvent

KIND_FROM_STATUS_NAME = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "UNAUTHENTICATED": "authentication",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "DEADLINE_EXCEEDED": "timeout",
    "UNAVAILABLE": "overloaded",
    "INTERNAL": "upstream",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def error_from_gemini(error: Any, status: int | None = None) -> GatewayError:
    """A Google API error object ({"code", "message", "status", "details"}) as a GatewayError."""
    error = error if isinstance(error, dict) else {}
    code = status or (error.get("code") if isinstance(error.get("code"), int) else None)
    kind = kind_for_status(code) if code else KIND_FROM_STATUS_NAME.get(str(error.get("status")), "upstream")
    err = GatewayError(kind, str(error.get("message") or "the provider reported an error"), status=code,
                       code=error.get("status") if isinstance(error.get("status"), str) else None)
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay") or ""))
            if match:
                err.retry_after = float(match.group(1))
    return err


class GeminiEncoder(StreamEncoder):
    __slots__ = ("content_type", "_sse", "_include", "_model", "_id", "_signature", "_calls", "_chunks", "_text_end")

    def __init__(self, request: CanonicalRequest, *, sse: bool) -> None:
        self._sse = sse
        self.content_type = b"text/event-stream" if sse else b"application/json"
        self._include = bool(request.reasoning and request.reasoning.include_thoughts)
        self._id = response_id()
        self._set_model(request.model)
        self._signature: str | None = None
        self._calls: dict[int, ToolCall] = {}  # calls whose arguments are still arriving, by index
        self._chunks = 0

    def _set_model(self, model: str) -> None:
        self._model = model
        # Text chunks are nearly all of a stream: theirs is fixed bytes around the JSON-encoded text, byte
        # for byte what _chunk() makes of one text part.
        self._text_end = (b'}],"role":"model"},"index":0}],"modelVersion":' + orjson.dumps(model)
                          + b',"responseId":' + orjson.dumps(self._id) + b"}")

    def _text_chunk(self, text: str) -> bytes:
        if self._signature:
            return self._chunk([{"text": text}])
        return self._framed(b'{"candidates":[{"content":{"parts":[{"text":' + orjson.dumps(text) + self._text_end)

    def _frame(self, payload: dict[str, Any]) -> bytes:
        return self._framed(orjson.dumps(payload))

    def _framed(self, data: bytes) -> bytes:
        if self._sse:
            return b"data: " + data + b"\r\n\r\n"
        self._chunks += 1
        return (b"[" if self._chunks == 1 else b",\r\n") + data

    def _chunk(self, parts: list[dict[str, Any]], finish: str | None = None, usage: Usage | None = None) -> bytes:
        if self._signature and parts:
            parts[0]["thoughtSignature"], self._signature = self._signature, None
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        payload: dict[str, Any] = {"candidates": [candidate]}
        if usage is not None:
            payload["usageMetadata"] = usage_to_gemini(usage)
        payload["modelVersion"] = self._model
        payload["responseId"] = self._id
        return self._frame(payload)

    def _take_calls(self) -> list[dict[str, Any]]:
        parts = [function_call_part(call) for call in self._calls.values()]
        self._calls = {}
        return parts

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, ToolCallDelta):
            call = self._calls.get(event.index)
            if call is not None:
                call.arguments += event.arguments
            return b""
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = self._chunk(self._take_calls()) if self._calls else b""
            return out + self._text_chunk(event.text)
        if isinstance(event, ReasoningDelta):
            out = self._chunk(self._take_calls()) if self._calls else b""
            if event.signature:
                self._signature = to_gemini_client(event.signature)
            if event.text and self._include:
                out += self._chunk([{"text": event.text, "thought": True}])
            return out
        if isinstance(event, ToolCallStart):
            self._calls[event.index] = ToolCall(event.id, event.name, "")
            return b""
        if isinstance(event, StreamStart):
            self._set_model(event.model)
            return b""
        if isinstance(event, StreamEnd):
            parts = self._take_calls() or [{"text": ""}]
            out = self._chunk(parts, FINISH_FROM_CANONICAL.get(event.finish_reason, "STOP"), event.usage)
            return out if self._sse else out + b"]"
        return b""

    def error(self, err: GatewayError) -> bytes:
        out = self._frame(gemini_error_body(err))
        return out if self._sse else out + b"]"


class GeminiDecoder(SSEDecoder):
    """Reads `streamGenerateContent?alt=sse`. Usage in each chunk is cumulative; the last one counts."""

    __slots__ = ("_started", "_finish", "_usage", "_usage_raw", "_tools")

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._finish: str | None = None
        self._usage = Usage()
        self._usage_raw: Any = None  # the usageMetadata self._usage was read from
        self._tools = 0

    def end(self) -> list[StreamEvent]:
        if self._finish is None:
            raise GatewayError("upstream", "the provider's stream ended before it finished")
        return [StreamEnd(finish_to_canonical(self._finish, self._tools > 0), self._usage)]

    def handle(self, sse: SSEEvent, events: list[StreamEvent]) -> None:
        payload = self.payload(sse)
        if "error" in payload:
            raise error_from_gemini(payload["error"])
        metadata = get(payload, "usageMetadata", "usage_metadata")
        if metadata and metadata != self._usage_raw:  # every chunk repeats the totals: read them when they change
            self._usage, self._usage_raw = usage_from_gemini(metadata), metadata
        if not self._started:
            self._started = True
            events.append(StreamStart(str(get(payload, "responseId", "response_id") or ""),
                                      str(get(payload, "modelVersion", "model_version") or ""),
                                      usage=self._usage if metadata else None))
        candidates = payload.get("candidates") or []
        if not candidates:
            feedback = get(payload, "promptFeedback", "prompt_feedback") or {}
            if get(feedback, "blockReason", "block_reason"):
                self._finish = "SAFETY"
            return
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            self._part(part, events)
        finish = get(candidate, "finishReason", "finish_reason")
        if finish:
            self._finish = finish

    def _part(self, part: dict, events: list[StreamEvent]) -> None:
        if len(part) == 1 and "text" in part:  # most parts: text alone, no thought, signature or call
            if part["text"]:
                events.append(TextDelta(str(part["text"])))
            return
        sig = get(part, "thoughtSignature", "thought_signature")
        sig = from_gemini(sig) if isinstance(sig, str) and sig else None
        if part.get("thought"):
            if part.get("text") or sig:
                events.append(ReasoningDelta(str(part.get("text") or ""), sig))
            return
        if sig:
            events.append(ReasoningDelta("", sig))
        call = get(part, "functionCall", "function_call")
        if part.get("text"):
            events.append(TextDelta(str(part["text"])))
        elif isinstance(call, dict):
            index = self._tools
            self._tools += 1
            name = str(call.get("name") or "")
            arguments = orjson.dumps(call.get("args") if call.get("args") is not None else {}).decode()
            events.append(ToolCallStart(index, str(call.get("id") or call_id(name, arguments, index)), name))
            events.append(ToolCallDelta(index, arguments))
