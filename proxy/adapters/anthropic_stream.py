"""Anthropic Messages streams: canonical events -> Anthropic SSE (client side), and back (upstream side).

The event sequence is the API reference's: message_start, then per content block content_block_start /
content_block_delta... / content_block_stop (one ping after the first block opens), then message_delta
with the stop reason and cumulative usage, then message_stop. A failure after the first byte is an
`event: error`.
"""

from typing import Any

import orjson

from proxy.adapters.anthropic import (
    ERROR_TYPES,
    STOP_FROM_CANONICAL,
    STOP_TO_CANONICAL,
    anthropic_error_body,
    native_id,
    usage_from_anthropic,
    usage_to_anthropic,
)
from proxy.adapters.base import StreamEncoder
from proxy.adapters.sse_decoder import SSEDecoder
from proxy.canonical import (
    CanonicalRequest,
    GatewayError,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    kind_for_status,
)
from proxy.sse import SSEEvent, sse_event

KIND_FROM_ERROR_TYPE = {value: key for key, value in ERROR_TYPES.items() if key not in ("budget_exceeded", "internal")}
KIND_FROM_ERROR_TYPE["api_error"] = "upstream"


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return sse_event(name, orjson.dumps(payload))


# Text and thinking deltas are nearly all of a stream: their frames are fixed bytes around the block index
# and the JSON-encoded text, byte for byte what _event() makes of the same payload.
_DELTA_FRAME = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"%b","%b":%b}}\n\n'


class AnthropicEncoder(StreamEncoder):
    """One content block open at a time, as the API does; a tool call's late argument fragment (only possible
    from an upstream that interleaves parallel calls) still goes to its own block index."""

    __slots__ = ("_thinking", "_index", "_open", "_tool_blocks", "_pinged")

    def __init__(self, request: CanonicalRequest) -> None:
        # Thinking blocks appear only when the client asked for thinking, as with the real API.
        self._thinking = request.reasoning is not None
        self._index = -1
        self._open: str | None = None
        self._tool_blocks: dict[int, int] = {}
        self._pinged = False

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _start(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        out += _event("content_block_start", {"type": "content_block_start", "index": self._index,
                                              "content_block": block})
        if not self._pinged:
            self._pinged = True
            out += _event("ping", {"type": "ping"})
        return out

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = b"" if self._open == "text" else self._start("text", {"type": "text", "text": ""})
            return out + _DELTA_FRAME % (self._index, b"text_delta", b"text", orjson.dumps(event.text))
        if isinstance(event, ToolCallDelta):
            block = self._tool_blocks.get(event.index)
            if block is None or not event.arguments:
                return b""
            return self._delta(block, {"type": "input_json_delta", "partial_json": event.arguments})
        if isinstance(event, ReasoningDelta):
            if not self._thinking or not (event.text or event.signature):
                return b""
            out = b""
            if self._open != "thinking":
                out = self._start("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            if event.text:
                out += _DELTA_FRAME % (self._index, b"thinking_delta", b"thinking", orjson.dumps(event.text))
            if event.signature:
                out += self._delta(self._index, {"type": "signature_delta", "signature": event.signature})
            return out
        if isinstance(event, ToolCallStart):
            out = self._start("tool", {"type": "tool_use", "id": event.id, "name": event.name, "input": {}})
            self._tool_blocks[event.index] = self._index
            return out
        if isinstance(event, StreamStart):
            usage = usage_to_anthropic(event.usage or Usage())
            message = {"id": native_id("msg_", event.id), "type": "message", "role": "assistant", "model": event.model,
                       "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
            return _event("message_start", {"type": "message_start", "message": message})
        if isinstance(event, StreamEnd):
            delta = {"stop_reason": STOP_FROM_CANONICAL.get(event.finish_reason, "end_turn"), "stop_sequence": None}
            return (self._close()
                    + _event("message_delta", {"type": "message_delta", "delta": delta,
                                               "usage": usage_to_anthropic(event.usage)})
                    + _event("message_stop", {"type": "message_stop"}))
        return b""

    def error(self, err: GatewayError) -> bytes:
        return _event("error", anthropic_error_body(err))


def error_from_anthropic(error: Any, status: int | None = None) -> GatewayError:
    """An Anthropic error object ({"type", "message"}) as a GatewayError."""
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or "the provider reported an error")
    kind = KIND_FROM_ERROR_TYPE.get(str(error.get("type")))
    if kind is None:
        kind = kind_for_status(status) if status else "upstream"
    return GatewayError(kind, message, status=status)


class AnthropicDecoder(SSEDecoder):
    __slots__ = ("_usage", "_stop", "_done", "_blocks", "_tools")

    def __init__(self) -> None:
        super().__init__()
        self._usage = Usage()
        self._stop: str | None = None
        self._done = False
        # upstream block index -> [kind, tool index, whether any argument text was seen]
        self._blocks: dict[int, list] = {}
        self._tools = 0

    def end(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if not self._done:
            if self._stop is None:
                raise GatewayError("upstream", "the provider's stream ended before it finished")
            self._finish(events)
        return events

    def _finish(self, events: list[StreamEvent]) -> None:
        self._done = True
        events.append(StreamEnd(STOP_TO_CANONICAL.get(self._stop or "end_turn", "stop"), self._usage))

    def handle(self, sse: SSEEvent, events: list[StreamEvent]) -> None:
        if self._done or sse.event == "ping":
            return
        payload = self.payload(sse)
        kind = payload.get("type") or sse.event
        if kind == "content_block_delta":
            self._delta(payload, events)
        elif kind == "content_block_start":
            self._block_start(payload, events)
        elif kind == "content_block_stop":
            block = self._blocks.get(payload.get("index"))
            if block and block[0] == "tool" and not block[2]:
                events.append(ToolCallDelta(block[1], "{}"))  # a call without arguments still has an object
        elif kind == "message_start":
            message = payload.get("message") or {}
            self._usage = usage_from_anthropic(message.get("usage"))
            events.append(StreamStart(str(message.get("id") or ""), str(message.get("model") or ""),
                                      usage=self._usage))
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            self._stop = delta.get("stop_reason") or self._stop
            self._usage = usage_from_anthropic(payload.get("usage"), self._usage)
        elif kind == "message_stop":
            self._finish(events)
        elif kind == "error":
            raise error_from_anthropic(payload.get("error"))

    def _block_start(self, payload: dict, events: list[StreamEvent]) -> None:
        block = payload.get("content_block") or {}
        index, kind = payload.get("index"), block.get("type")
        if kind == "tool_use":
            tool = self._tools
            self._tools += 1
            self._blocks[index] = ["tool", tool, False]
            events.append(ToolCallStart(tool, str(block.get("id") or f"toolu_{tool}"), str(block.get("name") or "")))
            if block.get("input"):
                events.append(ToolCallDelta(tool, orjson.dumps(block["input"]).decode()))
                self._blocks[index][2] = True
            return
        self._blocks[index] = [kind, None, False]
        if kind == "text" and block.get("text"):
            events.append(TextDelta(block["text"]))
        elif kind == "thinking" and (block.get("thinking") or block.get("signature")):
            events.append(ReasoningDelta(block.get("thinking") or "", block.get("signature") or None))

    def _delta(self, payload: dict, events: list[StreamEvent]) -> None:
        delta = payload.get("delta") or {}
        block = self._blocks.get(payload.get("index"))
        kind = delta.get("type")
        if kind == "text_delta":
            if delta.get("text"):
                events.append(TextDelta(delta["text"]))
        elif kind == "input_json_delta":
            if block and block[0] == "tool" and delta.get("partial_json"):
                block[2] = True
                events.append(ToolCallDelta(block[1], delta["partial_json"]))
        elif kind == "thinking_delta":
            if delta.get("thinking"):
                events.append(ReasoningDelta(delta["thinking"]))
        elif kind == "signature_delta":
            if delta.get("signature"):
                events.append(ReasoningDelta("", delta["signature"]))
