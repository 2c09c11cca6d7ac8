"""Request/response bodies of routes with `log_bodies` on, kept for the request log's detail page.

On the request path a `BodyCapture` only keeps references: the client's raw request bytes, the encoded
plain response, or the streamed text and tool calls as they pass. Decoding, redaction (proxy/redact.py),
truncation at DS2API_BODY_MAX_BYTES and the INSERT happen in the usage recorder's flush, in its worker
thread, batched with the usage rows. Routes with the switch off pay one attribute check per request.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from django.conf import settings
from django.utils import timezone

from proxy.canonical import ReasoningDelta, StreamEnd, TextDelta, ToolCallDelta, ToolCallStart
from proxy.models import StoredBody
from proxy.redact import redact_json, redact_text

log = logging.getLogger(__name__)

UNREADABLE = "[not JSON: not stored]"


@dataclass(slots=True)
class _ToolCall:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BodyCapture:
    """What one request sent and got, gathered while it runs (cheap appends only)."""

    request_id: str
    team_id: int | None
    request: bytes  # the client's body as received
    created_at: datetime | None = None  # set when the request ends, like its usage row's
    response: bytes | None = None  # the plain JSON response exactly as the client received it
    streamed: bool = False
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None

    def reset_response(self) -> None:
        """A new upstream attempt: what a failed earlier one produced never reached the client."""
        self.response, self.streamed, self.finish_reason = None, False, None
        self.text.clear()
        self.reasoning.clear()
        self.tool_calls.clear()

    def add_events(self, events: list) -> None:
        self.streamed = True
        for event in events:
            if isinstance(event, TextDelta):
                self.text.append(event.text)
            elif isinstance(event, ReasoningDelta):
                self.reasoning.append(event.text)
            elif isinstance(event, ToolCallStart):
                self.tool_calls[event.index] = _ToolCall(event.id, event.name)
            elif isinstance(event, ToolCallDelta):
                self.tool_calls.setdefault(event.index, _ToolCall("", "")).arguments.append(event.arguments)
            elif isinstance(event, StreamEnd):
                self.finish_reason = str(event.finish_reason)

    @property
    def size(self) -> int:
        """Roughly the memory held, for the recorder's buffer bound."""
        return (len(self.request) + len(self.response or b"") + sum(map(len, self.text))
                + sum(map(len, self.reasoning)) + sum(len(a) for c in self.tool_calls.values() for a in c.arguments))

    def streamed_document(self) -> dict:
        """A streamed answer as one JSON object: the text, reasoning and tool calls it carried, joined."""
        document: dict = {"text": "".join(self.text)}
        if self.reasoning:
            document["reasoning"] = "".join(self.reasoning)
        if self.tool_calls:
            document["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": "".join(c.arguments)}
                                      for _, c in sorted(self.tool_calls.items())]
        if self.finish_reason:
            document["finish_reason"] = self.finish_reason
        return document


def _decoded(raw: bytes | None) -> object:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return UNREADABLE


def _stored_text(value: object, limit: int) -> tuple[str, bool]:
    """Redacted, pretty JSON text cut at `limit` bytes (on a character boundary), and whether it was cut."""
    if value is None:
        return "", False
    safe = redact_text(value) if isinstance(value, str) else redact_json(value)
    data = orjson.dumps(safe, option=orjson.OPT_INDENT_2)
    if len(data) <= limit:
        return data.decode(), False
    return data[:limit].decode(errors="ignore"), True


def to_row(capture: BodyCapture, limit: int) -> StoredBody:
    request_text, request_cut = _stored_text(_decoded(capture.request), limit)
    response = capture.streamed_document() if capture.streamed else _decoded(capture.response)
    response_text, response_cut = _stored_text(response, limit)
    return StoredBody(request_id=capture.request_id, team_id=capture.team_id, created_at=capture.created_at or timezone.now(),
                      request_body=request_text, response_body=response_text, streamed=capture.streamed,
                      truncated=request_cut or response_cut)


def write(captures: list[BodyCapture]) -> None:
    """Redact and store a batch. Runs in a worker thread (proxy.db.run_db)."""
    limit = settings.DS2API_BODY_MAX_BYTES
    rows = []
    for capture in captures:
        try:
            rows.append(to_row(capture, limit))
        except Exception:  # an optional record; one odd body must not cost the others (or the flusher)
            log.exception("could not prepare the stored bodies of request %s", capture.request_id)
    # A retried batch may already be partly stored: request ids are unique, so those rows are skipped.
    StoredBody.objects.bulk_create(rows, batch_size=200, ignore_conflicts=True)


def body_for(request_id: str, team_id: int | None) -> StoredBody | None:
    """The stored bodies of a usage row the caller may see (scope the row first); its team must match too."""
    if not request_id:
        return None
    return StoredBody.objects.filter(request_id=request_id, team_id=team_id).first()
