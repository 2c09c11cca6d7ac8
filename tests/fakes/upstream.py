"""A fake LLM provider speaking the real OpenAI, Anthropic and Gemini wire formats.

Tests and benchmarks point the gateway (or an official SDK) at it instead of a real provider.
It is a raw ASGI app (`app`, or `FakeApp(state)`), run with
`python -m tests.fakes.upstream --host 127.0.0.1 --port 8900 [--workers N]` or, in tests,
`with FakeUpstream() as fake: ... fake.url ... fake.state`.

Endpoints
  OpenAI     POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models
             (auth `Authorization: Bearer <key>`)
  Anthropic  POST /v1/messages, POST /v1/messages/count_tokens, GET /v1/models
             (auth `x-api-key`, or `Authorization: Bearer` as anthropic SDK 2.x sends it;
             `anthropic-version` header required, else 400)
  Gemini     POST /{v1,v1beta}/models/{model}:generateContent | :streamGenerateContent
             (`?alt=sse` -> SSE, else a streamed JSON array) | :countTokens | :embedContent |
             :batchEmbedContents, GET /v1beta/models (auth `x-goog-api-key` or `?key=`)
  `GET /v1/models` answers in Anthropic's shape when `anthropic-version` or `x-api-key` is
  sent, in Gemini's when a Gemini key is sent, else in OpenAI's. Any key is valid unless listed in
  `config.invalid_keys`; a missing or invalid key gets 401 in the vendor's error shape, bad
  JSON or a missing required field 400.

The scripted model (substring rules on the requested model name, combinable)
  reply        "echo: " + text of the last user message (text parts joined by a space; a
               message made only of tool results does not count), plus " [images: N]" when the
               request has N image parts (image_url / image / inlineData, fileData).
  tool         calls the first tool in the request (else `get_weather`) with
               {"city": "Paris", "unit": "celsius"}; ids call_fake_1 / toolu_fake_1; finish
               tool_calls / tool_use / STOP. `parallel`: two calls, Paris then Tokyo.
               When the last message carries tool results, it answers "echo: <result text>"
               instead (results joined by a space; a Gemini response {"k": "text"} counts as
               "text", other responses as compact JSON).
  reason       reasoning "thinking about: <last user text>" before the answer: OpenAI
               `reasoning_content`, Anthropic `thinking` block with signature, Gemini part
               with thought: true.
  long         the reply is "w0 w1 ... w199" (200 words, 200 stream chunks).
  cached       half the prompt tokens are reported as cached.
  max_tokens / max_completion_tokens / maxOutputTokens: the reply is cut to that many words,
  finish length / max_tokens / MAX_TOKENS.

Token accounting
  prompt = whitespace words across all input texts (system, messages, tool results; min 1)
  + 10 per image. text = words of the reply, reasoning = words of the reasoning, 10 per tool
  call. OpenAI: completion_tokens = text + reasoning + tools, reasoning_tokens,
  prompt_tokens_details.cached_tokens. Anthropic: input_tokens = prompt - cached,
  cache_read_input_tokens = cached, output_tokens = text + reasoning + tools (message_start
  reports output_tokens 1, message_delta the total). Gemini: candidatesTokenCount = text +
  tools, thoughtsTokenCount / cachedContentTokenCount only when non-zero; stream chunks before
  the last carry only promptTokenCount/totalTokenCount.

Streaming: one event per word (spaces kept, so the pieces join to the full text; never split
inside a character), tool arguments in 3-5 character fragments (Gemini sends whole
functionCall parts). `config.byte_chunk` additionally writes every event in N-byte pieces.

Control API (no auth; the same operations exist on `FakeState`; per process, so use one
worker when a test drives it):
  POST   /_fake/faults     {"key": K or "*", "mode": M, "count": N?, ...} queue a fault; the
                           first fault for the request's key applies, else the first for "*";
                           `count` uses it up after N requests. Modes: status (`status`,
                           `retry_after`, `message`), slow (`delay` before headers), drip
                           (`delay` between events; plain replies: between headers and body), cut (close after `after` events, or half
                           a plain body), reset (drop the connection), malformed (half a JSON
                           body, or event `after` truncated), huge (`size`-byte reply text).
  GET|DELETE /_fake/faults [?key=K]
  POST   /_fake/ratelimit  {"key": K or "*", "remaining_requests": N, "remaining_tokens": M,
                           "limit_requests", "limit_tokens", "reset_requests", "reset_tokens"}
  DELETE /_fake/ratelimit
  GET    /_fake/stats [?arrivals=0]  totals and, per key: requests, errors, in_flight,
                           max_in_flight, prompt/completion tokens, requests_last_60s,
                           arrivals (unix times, last 10,000)
  DELETE /_fake/stats
  GET    /_fake/last, /_fake/requests?n=10  the last requests (method, path, query, headers
                           with secrets masked to the last 4 characters, parsed JSON body)
  GET|POST /_fake/config   {"chunk_delay": s, "byte_chunk": n, "invalid_keys": [...]}
  POST   /_fake/reset      clear faults, rate limits, config and stats
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
from dataclasses import asdict
from types import ModuleType
from urllib.parse import parse_qs

import orjson
import uvicorn

from tests.fakes import wire_anthropic, wire_gemini, wire_openai
from tests.fakes.reply import Incoming, Reply, json_reply
from tests.fakes.script import BadRequest
from tests.fakes.state import FakeState, Fault
from tests.servers import ServerThread

__all__ = ["FakeApp", "FakeState", "FakeUpstream", "app", "state"]

Route = tuple[ModuleType, str, str]


def route(method: str, path: str, headers: dict[bytes, bytes], query: bytes) -> Route | None:
    if method == "POST":
        if path == "/v1/chat/completions":
            return wire_openai, "chat", ""
        if path == "/v1/messages":
            return wire_anthropic, "messages", ""
        if path == "/v1/messages/count_tokens":
            return wire_anthropic, "count_tokens", ""
        if path == "/v1/embeddings":
            return wire_openai, "embeddings", ""
        for prefix in ("/v1beta/models/", "/v1/models/"):
            if path.startswith(prefix):
                model, _, op = path[len(prefix) :].rpartition(":")
                return (wire_gemini, op, model) if model else None
        return None
    if method == "GET" and path in ("/v1/models", "/v1beta/models"):
        if path == "/v1beta/models" or wire_gemini.api_key(headers, query):
            return wire_gemini, "models", ""
        if b"anthropic-version" in headers or b"x-api-key" in headers:
            return wire_anthropic, "models", ""
        return wire_openai, "models", ""
    return None


class FakeApp:
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        path = scope["path"]
        body = await _read_body(receive)
        if path.startswith("/_fake/"):
            await _send(
                send, self._control(scope["method"], path[7:], scope["query_string"], body), None, self.state
            )
            return
        headers = dict(scope["headers"])
        query = scope["query_string"]
        found = route(scope["method"], path, headers, query)
        if found is None:
            not_found = {"error": {"message": f"no route for {scope['method']} {path}", "type": "not_found"}}
            await _send(send, json_reply(not_found, 404), None, self.state)
            return
        wire, op, model = found
        key = wire.api_key(headers, query)
        state = self.state
        stats = state.begin(key or "", scope["method"], path, query, scope["headers"], body)
        number = state.next_id()
        inc = Incoming(
            scope["method"], path, query, headers, body, key or "", f"req_fake{number:08d}", number, model
        )
        try:
            reply, fault = await self._answer(wire, op, inc, key, send)
            if reply is None:
                return
            if reply.status >= 400:
                stats.errors += 1
            stats.prompt_tokens += reply.prompt_tokens
            stats.completion_tokens += reply.completion_tokens
            reply.headers += wire.headers(state, inc, reply.status)
            await _send(send, reply, fault, state)
        finally:
            state.end(stats)

    async def _answer(
        self, wire: ModuleType, op: str, inc: Incoming, key: str | None, send
    ) -> tuple[Reply | None, Fault | None]:
        if not key or self.state.is_invalid_key(key):
            return wire.error(401), None
        fault = self.state.take_fault(key)
        if fault is not None:
            if fault.mode == "reset":
                await _drop(send, reset=True)
                return None, None
            if fault.mode == "slow":
                await asyncio.sleep(fault.delay)
            elif fault.mode == "status":
                return wire.error(fault.status, fault.message, fault.retry_after), None
        try:
            return wire.handle(op, inc, fault), fault
        except BadRequest as exc:
            return wire.error(400, str(exc)), None

    def _control(self, method: str, name: str, query: bytes, body: bytes) -> Reply:
        state = self.state
        params = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
        try:
            data = orjson.loads(body) if body else {}
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            if (method, name) == ("POST", "faults"):
                return json_reply(
                    {"fault": asdict(state.add_fault(**data)), "faults": state.faults_as_list()}
                )
            if (method, name) == ("GET", "faults"):
                return json_reply({"faults": state.faults_as_list()})
            if (method, name) == ("DELETE", "faults"):
                state.clear_faults(params.get("key"))
                return json_reply({"faults": state.faults_as_list()})
            if (method, name) == ("POST", "ratelimit"):
                return json_reply(asdict(state.set_ratelimit(**data)))
            if (method, name) == ("DELETE", "ratelimit"):
                state.ratelimits.clear()
                return json_reply({"ok": True})
            if (method, name) == ("GET", "stats"):
                return json_reply(state.stats(arrivals=params.get("arrivals") != "0"))
            if (method, name) == ("DELETE", "stats"):
                state.reset_stats()
                return json_reply({"ok": True})
            if (method, name) == ("GET", "last"):
                last = state.last_request()
                return json_reply(last) if last else json_reply({"error": "no request yet"}, 404)
            if (method, name) == ("GET", "requests"):
                return json_reply({"requests": state.last_requests(int(params.get("n", 10)))})
            if name == "config" and method in ("GET", "POST"):
                return json_reply(asdict(state.configure(**data) if method == "POST" else state.config))
            if (method, name) == ("POST", "reset"):
                state.reset()
                return json_reply({"ok": True})
        except (ValueError, TypeError) as exc:
            return json_reply({"error": str(exc)}, 400)
        return json_reply({"error": f"no control endpoint {method} /_fake/{name}"}, 404)


# -- sending -------------------------------------------------------------------------------
async def _send(send, reply: Reply, fault: Fault | None, state: FakeState) -> None:
    headers = [(b"content-type", reply.content_type), *reply.headers]
    mode = fault.mode if fault is not None else None
    if reply.frames is None:
        body = reply.body
        if mode == "malformed":
            body = body[: len(body) // 2]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if mode == "cut":
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            await _drop(send, reset=False)
            return
        if mode == "drip":
            await asyncio.sleep(fault.delay)
        await send({"type": "http.response.body", "body": body})
        return
    frames = reply.frames
    last = len(frames) - 1
    if mode == "malformed":
        at = min(fault.after, last)
        frames[at] = _garble(frames[at])
    cut_at = min(fault.after, last) if mode == "cut" else -1
    delay = fault.delay if mode == "drip" else state.config.chunk_delay
    piece = state.config.byte_chunk
    headers.append((b"cache-control", b"no-cache"))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    cycle = getattr(send, "__self__", None)  # uvicorn's request cycle knows when the client has gone
    for i, frame in enumerate(frames):
        if i == cut_at:
            await _drop(send, reset=False)
            return
        if delay and i:
            await asyncio.sleep(delay)
        if getattr(cycle, "disconnected", False):
            return  # the gateway cancelled the request: stop, as a real provider would (in_flight drops)
        if piece > 0:
            for start in range(0, len(frame), piece):
                await send(
                    {"type": "http.response.body", "body": frame[start : start + piece], "more_body": True}
                )
            if i == last:
                await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": frame, "more_body": i != last})


def _garble(frame: bytes) -> bytes:
    """Cut the JSON payload of one event in half, keeping its framing."""
    end = len(frame.rstrip(b"\r\n"))
    start = frame.rfind(b"data: ") + 6 if b"data: " in frame else 0
    return frame[: start + (end - start) // 2] + frame[end:]


async def _drop(send, reset: bool) -> None:
    """Close the client connection mid-exchange (uvicorn: through the transport behind `send`)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("fake upstream dropped the connection")
    if reset:
        sock = transport.get_extra_info("socket")
        try:  # linger 0: the peer sees a TCP reset, not an orderly close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (AttributeError, OSError):
            pass
        transport.abort()
    else:
        transport.close()
    # let the server notice the disconnect, so it does not report an unfinished response
    for _ in range(200):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.005)


async def _read_body(receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- running -------------------------------------------------------------------------------
state = FakeState()
app = FakeApp(state)


class FakeUpstream(ServerThread):
    """Runs a fake upstream with its own `state` on a free port in a background thread."""

    def __init__(self, state: FakeState | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state or FakeState()
        super().__init__(FakeApp(self.state), host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI / Anthropic / Gemini upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    uvicorn.run(
        "tests.fakes.upstream:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="httptools",
    )


if __name__ == "__main__":
    main()
