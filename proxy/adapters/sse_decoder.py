"""The common frame of SSE upstream decoders: bytes -> SSE events -> canonical events.

A failure inside a batch (an `error` event, a malformed event) does not swallow the events decoded before it
in the same network chunk: they are returned, so the client still gets them, and the failure is raised on
the next call, which then ends the client's stream with its protocol's error event.
"""

from typing import Any

import orjson

from proxy.adapters.base import StreamDecoder
from proxy.canonical import GatewayError, StreamEvent
from proxy.sse import SSEEvent, SSEParser


class SSEDecoder(StreamDecoder):
    __slots__ = ("_sse", "_failure")

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._failure: GatewayError | None = None

    def handle(self, sse: SSEEvent, events: list[StreamEvent]) -> None:
        """Append the canonical events of one SSE event; raise GatewayError for a failure."""
        raise NotImplementedError

    def end(self) -> list[StreamEvent]:
        """At end of input: the final StreamEnd, or GatewayError("upstream") if the stream was cut short."""
        raise NotImplementedError

    @staticmethod
    def payload(sse: SSEEvent) -> dict[str, Any]:
        """The event's JSON object; anything else means the provider sent a broken stream."""
        try:
            data = orjson.loads(sse.data)
        except orjson.JSONDecodeError:
            data = _lenient(sse.data)
        if not isinstance(data, dict):
            raise GatewayError("upstream", "the provider sent a malformed stream event")
        return data

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        return self._run(self._sse.feed(chunk))

    def close(self) -> list[StreamEvent]:
        events = self._run(self._sse.close())
        if self._failure is not None:
            raise self._failure
        return events + self.end()

    def _run(self, parsed: list[SSEEvent]) -> list[StreamEvent]:
        if self._failure is not None:
            raise self._failure
        events: list[StreamEvent] = []
        for sse in parsed:
            try:
                self.handle(sse, events)
            except GatewayError as err:
                self._failure = err
                break
        return events


def _lenient(data: bytes) -> Any:
    """JSON whose strings hold invalid UTF-8 reads with U+FFFD in their place, as a text decoder would."""
    try:
        return orjson.loads(data.decode("utf-8", errors="replace"))
    except orjson.JSONDecodeError as exc:
        raise GatewayError("upstream", "the provider sent a malformed stream event") from exc
