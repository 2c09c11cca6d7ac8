"""What a wire module receives (`Incoming`) and hands back (`Reply`) inside the fake upstream."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from tests.fakes.script import BadRequest

JSON = b"application/json"
SSE = b"text/event-stream"


@dataclass(slots=True)
class Incoming:
    method: str
    path: str
    query: bytes
    headers: dict[bytes, bytes]
    body: bytes
    key: str
    request_id: str
    number: int  # per-process request counter, used for deterministic ids
    model: str = ""  # from the path (Gemini)

    def json(self) -> dict:
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"could not parse the JSON body of your request: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return data


@dataclass(slots=True)
class Reply:
    status: int = 200
    content_type: bytes = JSON
    body: bytes = b""
    frames: list[bytes] | None = None  # set for streamed replies: one entry per event
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def json_reply(data: object, status: int = 200, headers: list | None = None) -> Reply:
    return Reply(status=status, body=orjson.dumps(data), headers=headers or [])


def sse_data(data: object, crlf: bool = False) -> bytes:
    return b"data: " + orjson.dumps(data) + (b"\r\n\r\n" if crlf else b"\n\n")


def sse_event(event: str, data: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
