"""Server-sent events: an incremental parser over raw bytes, and encoders.

The parser works on bytes and never decodes event data: a UTF-8 character split across network chunks is
never broken, and the JSON decoders read the bytes as they are.
"""

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: bytes  # the event's data lines joined by b"\n", undecoded


class SSEParser:
    """The SSE field grammar, read line by line.

    This runs for every line of every streamed answer, so it is one loop over the chunk's lines with the
    state in locals, and the `data:` / `event:` lines that make up nearly every event are read before the
    general field syntax (0.8 instead of 1.4 us per OpenAI event: a method call per line and decoding the
    data to text were most of the cost). A fast path splitting whole events on the blank line between them,
    with this loop as the fallback, measured slower than this loop alone: CPython searches for a two-byte
    separator more slowly than for a newline, and each block still needs its shape checked.
    """

    __slots__ = ("_buffer", "_event", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        lines = (self._buffer + chunk if self._buffer else chunk).split(b"\n")
        self._buffer = lines.pop()  # an incomplete line, kept until its newline arrives
        return self._lines(lines)

    def close(self) -> list[SSEEvent]:
        last = self._buffer.rstrip(b"\r")
        self._buffer = b""
        return self._lines([last, b""] if last else [b""])

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        event, data = self._event, self._data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # a blank line ends the event
                if data:
                    events.append(SSEEvent(event, data[0] if len(data) == 1 else b"\n".join(data)))
                    data = []
                event = None
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                event = (line[7:] if line[6:7] == b" " else line[6:]).decode("utf-8", errors="replace")
            elif not line.startswith(b":"):  # ":" opens a comment / keep-alive
                name, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if name == b"data":
                    data.append(value)
                elif name == b"event":
                    event = value.decode("utf-8", errors="replace")
        self._event, self._data = event, data
        return events


def sse_data(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def sse_event(event: str, payload: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"
