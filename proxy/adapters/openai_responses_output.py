"""OpenAI Responses output: the Response object, whole (`render_response`) or event by event (`ResponsesEncoder`).

Canonical reasoning is shown as a reasoning item with one summary part (what Responses clients display);
a provider's reasoning signature (Anthropic thinking signature, Gemini thought signature) travels in
`encrypted_content`, so sending the item back in the next request restores it. Refusal text is a `refusal`
content part of the message item, as OpenAI sends it.
"""

import time
import uuid
from typing import Any

import orjson

from proxy import response_store
from proxy.adapters.base import StreamEncoder
from proxy.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    GatewayError,
    ReasoningDelta,
    ReasoningPart,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from proxy.sse import sse_event

# Text deltas are nearly all of a stream: their frame is fixed bytes around the few values, byte for byte what
# ResponsesEncoder._event() writes for the same fields.
_TEXT_DELTA = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":%d,'
               b'"item_id":%b,"output_index":%d,"content_index":%d,"delta":%b,"logprobs":[]}\n\n')

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
ERROR_CODES = {"rate_limit": "rate_limit_exceeded", "budget_exceeded": "rate_limit_exceeded",
               "invalid_request": "invalid_prompt"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def responses_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                 "cache_write_tokens": usage.cache_creation_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _status(finish: str) -> tuple[str, dict | None]:
    reason = INCOMPLETE_REASONS.get(finish)
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def envelope(request: CanonicalRequest, response_id: str, created_at: int, status: str, *,
             output: list[dict], usage: Usage | None = None, incomplete: dict | None = None,
             error: dict | None = None) -> dict[str, Any]:
    """A Response object; request settings are echoed the way OpenAI echoes them."""
    echo = request.extra.get("responses_echo") or {}
    reasoning = echo.get("reasoning") if isinstance(echo.get("reasoning"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "metadata": echo.get("metadata") or {},
        "model": request.model,
        "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": echo.get("service_tier", "default"),
        "store": bool(echo.get("store", False)),
        "temperature": echo.get("temperature", 1.0),
        "text": echo.get("text") or {"format": {"type": "text"}},
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools") or [],
        "top_p": echo.get("top_p", 1.0),
        "truncation": echo.get("truncation", "disabled"),
        "usage": responses_usage(usage) if usage is not None else None,
        "user": echo.get("user"),
    }


def message_item(item_id: str, content: list[dict], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def content_part(text: str, refusal: bool) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text} if refusal else output_text(text)


def _append_text(content: list[dict], text: str, refusal: bool) -> None:
    """Text joins the last content part of its kind; answer text and refusal text are separate parts."""
    last = content[-1] if content else None
    if last is not None and last["type"] == ("refusal" if refusal else "output_text"):
        last["refusal" if refusal else "text"] += text
    else:
        content.append(content_part(text, refusal))


def reasoning_item(item_id: str, text: str | None, signature: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "reasoning",
                            "summary": [] if text is None else [{"type": "summary_text", "text": text}]}
    if signature:
        item["encrypted_content"] = signature
    return item


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


def _remember(request: CanonicalRequest, response: dict) -> None:
    team_id = request.extra.get("responses_store_team")
    if team_id is not None:
        response_store.remember(team_id, response)


def render_response(response: CanonicalResponse, request: CanonicalRequest) -> dict[str, Any]:
    status, incomplete = _status(response.finish_reason)
    item_status = "incomplete" if status == "incomplete" else "completed"
    output: list[dict] = []
    previous: type | None = None
    for part in response.parts:
        if isinstance(part, ReasoningPart):
            if previous is ReasoningPart:  # consecutive thinking blocks read as one reasoning item
                last = output[-1]
                last["summary"][0]["text"] += "\n\n" + part.text
                last["encrypted_content"] = part.signature or last.get("encrypted_content")
            else:
                output.append(reasoning_item(new_id("rs"), part.text, part.signature))
        elif isinstance(part, TextPart):
            if previous is not TextPart:
                output.append(message_item(new_id("msg"), [], item_status))
            _append_text(output[-1]["content"], part.text, part.refusal)
        elif isinstance(part, ToolCall):
            output.append(function_call_item(new_id("fc"), part.id, part.name, part.arguments, "completed"))
        previous = type(part)
    body = envelope(request, new_id("resp"), response.created or int(time.time()), status, output=output,
                    usage=response.usage, incomplete=incomplete)
    _remember(request, body)
    return body


class ResponsesEncoder(StreamEncoder):
    """The Responses event sequence, built from canonical events as they arrive.

    Items open with `output_item.added` and close with `output_item.done`; a reasoning or message item
    closes when another kind of item starts, function calls stay open until the end because providers
    may interleave argument deltas of parallel calls. Inside the message item, answer text and refusal text
    are separate content parts (`output_text` / `refusal`), each opened and closed with its own events.
    """

    def __init__(self, request: CanonicalRequest) -> None:
        self.request = request
        self.response_id = new_id("resp")
        self.created_at = int(time.time())
        self.sequence = 0
        self.output: list[dict] = []  # the items as they will appear in the final response
        self.buffers: list[list[str]] = []  # text / summary / arguments pieces per output index
        self.reasoning: int | None = None  # open item indices
        self.message: int | None = None
        self.content: list[dict] = []  # the open message's finished content parts
        self.part_refusal: bool | None = None  # the kind of its open content part, None when none is open
        self.calls: dict[int, int] = {}  # canonical tool-call index -> output index
        self.signature: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_event(kind, orjson.dumps(payload))

    def _add(self, item: dict) -> tuple[int, bytes]:
        index = len(self.output)
        self.output.append(item)
        self.buffers.append([])
        return index, self._event("response.output_item.added", output_index=index, item=item)

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._text(event.text, event.refusal) if event.text else b""
        if isinstance(event, ToolCallDelta):
            return self._arguments(event.index, event.arguments)
        if isinstance(event, ReasoningDelta):
            return self._reasoning(event)
        if isinstance(event, ToolCallStart):
            return self._close_open() + self._start_call(event.index, event.id, event.name)
        if isinstance(event, StreamStart):
            return self._start()
        if isinstance(event, StreamEnd):
            return self._end(event)
        return b""

    def _start(self) -> bytes:
        response = envelope(self.request, self.response_id, self.created_at, "in_progress", output=[])
        return self._event("response.created", response=response) + self._event("response.in_progress",
                                                                                  response=response)

    def _reasoning(self, event: ReasoningDelta) -> bytes:
        out = b""
        if event.signature:
            self.signature = event.signature
        if self.reasoning is None:
            if not event.text:
                return b""
            out += self._close_message()
            self.signature = event.signature
            self.reasoning, added = self._add(reasoning_item(new_id("rs"), None, None))
            part = {"type": "summary_text", "text": ""}
            out += added + self._event("response.reasoning_summary_part.added", item_id=self._id(self.reasoning),
                                       output_index=self.reasoning, summary_index=0, part=part)
        if event.text:
            self.buffers[self.reasoning].append(event.text)
            out += self._event("response.reasoning_summary_text.delta", item_id=self._id(self.reasoning),
                               output_index=self.reasoning, summary_index=0, delta=event.text)
        return out

    def _text(self, text: str, refusal: bool) -> bytes:
        out = b""
        if self.message is None:
            out += self._close_reasoning()
            self.message, added = self._add(message_item(new_id("msg"), [], "in_progress"))
            self.content = []
            out += added
        where = {"item_id": self._id(self.message), "output_index": self.message}
        if self.part_refusal is not refusal:
            out += self._close_part()
            self.part_refusal = refusal
            out += self._event("response.content_part.added", **where, content_index=len(self.content),
                               part=content_part("", refusal))
        self.buffers[self.message].append(text)
        if refusal:
            return out + self._event("response.refusal.delta", **where, content_index=len(self.content), delta=text)
        self.sequence += 1
        return out + _TEXT_DELTA % (self.sequence - 1, orjson.dumps(where["item_id"]), self.message,
                                    len(self.content), orjson.dumps(text))

    def _close_part(self) -> bytes:
        if self.part_refusal is None or self.message is None:
            return b""
        refusal, self.part_refusal = self.part_refusal, None
        text = "".join(self.buffers[self.message])
        self.buffers[self.message].clear()
        where = {"item_id": self._id(self.message), "output_index": self.message, "content_index": len(self.content)}
        part = content_part(text, refusal)
        self.content.append(part)
        done = (self._event("response.refusal.done", **where, refusal=text) if refusal
                else self._event("response.output_text.done", **where, text=text, logprobs=[]))
        return done + self._event("response.content_part.done", **where, part=part)

    def _start_call(self, index: int, call_id: str, name: str) -> bytes:
        output_index, added = self._add(function_call_item(new_id("fc"), call_id, name, "", "in_progress"))
        self.calls[index] = output_index
        return added

    def _arguments(self, index: int, fragment: str) -> bytes:
        out = b""
        if index not in self.calls:  # a provider that skipped the start: open the call now
            out += self._close_open() + self._start_call(index, f"call_{index}", "")
        output_index = self.calls[index]
        self.buffers[output_index].append(fragment)
        return out + self._event("response.function_call_arguments.delta", item_id=self._id(output_index),
                                 output_index=output_index, delta=fragment)

    def _id(self, output_index: int) -> str:
        return self.output[output_index]["id"]

    def _close_reasoning(self) -> bytes:
        if self.reasoning is None:
            return b""
        index, self.reasoning = self.reasoning, None
        text = "".join(self.buffers[index])
        item = self.output[index] = reasoning_item(self._id(index), text, self.signature)
        part = {"type": "summary_text", "text": text}
        return (self._event("response.reasoning_summary_text.done", item_id=item["id"], output_index=index,
                            summary_index=0, text=text)
                + self._event("response.reasoning_summary_part.done", item_id=item["id"], output_index=index,
                              summary_index=0, part=part)
                + self._event("response.output_item.done", output_index=index, item=item))

    def _close_message(self, status: str = "completed") -> bytes:
        if self.message is None:
            return b""
        out = self._close_part()
        index, self.message = self.message, None
        item = self.output[index] = message_item(self._id(index), self.content, status)
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def _close_calls(self) -> bytes:
        out = b""
        for index in sorted(self.calls.values()):
            arguments = "".join(self.buffers[index])
            current = self.output[index]
            item = self.output[index] = function_call_item(current["id"], current["call_id"], current["name"],
                                                           arguments, "completed")
            out += self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                               arguments=arguments)
            out += self._event("response.output_item.done", output_index=index, item=item)
        self.calls = {}
        return out

    def _close_open(self) -> bytes:
        return self._close_reasoning() + self._close_message()

    def _end(self, event: StreamEnd) -> bytes:
        status, incomplete = _status(event.finish_reason)
        out = self._close_reasoning() + self._close_message("incomplete" if incomplete else "completed")
        out += self._close_calls()
        response = envelope(self.request, self.response_id, self.created_at, status, output=self.output,
                            usage=event.usage, incomplete=incomplete)
        _remember(self.request, response)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self._event(kind, response=response)

    def _output_so_far(self) -> list[dict]:
        """The output as it stands when the stream fails: open items keep what was streamed into them (the
        client's accumulator has it too) and read as incomplete."""
        output = list(self.output)
        if self.reasoning is not None:
            index = self.reasoning
            output[index] = reasoning_item(self._id(index), "".join(self.buffers[index]), self.signature)
        if self.message is not None:
            content = list(self.content)
            if self.part_refusal is not None:
                content.append(content_part("".join(self.buffers[self.message]), self.part_refusal))
            output[self.message] = message_item(self._id(self.message), content, "incomplete")
        for index in self.calls.values():
            current = output[index]
            output[index] = function_call_item(current["id"], current["call_id"], current["name"],
                                               "".join(self.buffers[index]), "incomplete")
        return output

    def error(self, err: GatewayError) -> bytes:
        code = ERROR_CODES.get(err.kind, "server_error")
        response = envelope(self.request, self.response_id, self.created_at, "failed", output=self._output_so_far(),
                            error={"code": code, "message": err.message})
        return (self._event("error", code=code, message=err.message, param=err.param)
                + self._event("response.failed", response=response))
