"""Sending one upstream answer to the client: a plain response, or a stream translated event by event.

Everything the usage row needs is noted on the request's `Outcome` as it goes by: the provider's usage
when it reports it, and otherwise the text seen so far, from which `proxy/usage.py` estimates tokens.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import orjson

from proxy.adapters.base import ClientProtocol, InboundCall, StreamDecoder
from proxy.asgi_io import ClientDisconnected, Receive, Send
from proxy.attempts import TRANSPORT_ERRORS
from proxy.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    GatewayError,
    ReasoningDelta,
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from proxy.http_client import Response
from proxy.redact import scrub_error

log = logging.getLogger(__name__)

SHUTTING_DOWN = GatewayError("overloaded", "the gateway is shutting down; retry the request")
# A tuple, not `TextDelta | ReasoningDelta` inline: that builds a union per event and checks three times slower.
_TEXT_EVENTS = (TextDelta, ReasoningDelta)


class FailedBeforeFirstByte(Exception):
    """The stream broke before the client saw anything: the attempt may be retried elsewhere."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


async def send_result(send: Send, protocol: ClientProtocol, request: CanonicalRequest, result: CanonicalResponse,
                      headers: list, outcome) -> None:
    result.model = request.model
    outcome.note_response(result)
    body = orjson.dumps(protocol.render_response(result, request))
    if outcome.bodies is not None:
        outcome.bodies.response = body
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def relay(receive: Receive, send: Send, protocol: ClientProtocol, call: InboundCall,
                request: CanonicalRequest, batches: AsyncIterator[list], headers: list, outcome,
                started: float) -> None:
    """Translate batches of canonical events into the client's stream framing as they arrive.

    Raises FailedBeforeFirstByte if the upstream fails before anything reached the client; after that, a
    failure ends the stream with the protocol's own error event.
    """
    encoder = protocol.stream_encoder(request, call)
    stream_headers = [(b"content-type", encoder.content_type), (b"cache-control", b"no-cache")] + headers[1:]
    sent_start = False
    seen = outcome.output
    disconnect = asyncio.ensure_future(_wait_disconnect(receive))
    # A client that leaves while the provider is silent (thinking, stalled) must not hold the upstream
    # request and its credential slot until the read timeout: its disconnect interrupts the wait at once.
    relaying = asyncio.current_task()
    watching = True

    def interrupt(done: asyncio.Future) -> None:
        if watching and not done.cancelled():
            relaying.cancel()

    disconnect.add_done_callback(interrupt)

    async def emit(events: list) -> None:
        nonlocal sent_start
        out = []
        for event in events:
            if isinstance(event, _TEXT_EVENTS):
                seen.append(event.text)
            elif isinstance(event, ToolCallDelta):
                seen.append(event.arguments)
            elif isinstance(event, ToolCallStart):
                seen.append(event.name)
            elif isinstance(event, StreamStart):
                event.model = request.model
                outcome.note_start(getattr(event, "usage", None))
            elif isinstance(event, StreamEnd):
                outcome.note_end(event.usage)
            piece = encoder.encode(event)
            if piece:
                out.append(piece)
        if not out:
            return
        if not sent_start:
            sent_start = True
            outcome.ttfb_ms = int((time.perf_counter() - started) * 1000)
            await send({"type": "http.response.start", "status": 200, "headers": stream_headers})
        await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})

    try:
        async for events in batches:
            if disconnect.done():
                raise ClientDisconnected()
            if events:
                outcome.upstream_started = True
                if outcome.bodies is not None:
                    outcome.bodies.add_events(events)
            await emit(events)
    except asyncio.CancelledError:
        if disconnect.done() and not disconnect.cancelled() and relaying.uncancel() == 0:
            raise ClientDisconnected() from None
        if sent_start:  # the server is stopping and its grace period ran out: end the stream in protocol
            outcome.status, outcome.error_type, outcome.stream_failed = 503, "shutdown", True
            await send({"type": "http.response.body", "body": encoder.error(SHUTTING_DOWN), "more_body": False})
        raise
    except ClientDisconnected:
        raise
    except Exception as exc:  # a decoder choking on an odd payload is the provider's failure as much as a reset
        if not isinstance(exc, (GatewayError, *TRANSPORT_ERRORS)):
            log.exception("could not translate the provider's stream")
        err = exc if isinstance(exc, GatewayError) else GatewayError("upstream", "the provider's stream failed")
        if not sent_start:
            raise FailedBeforeFirstByte(err) from None
        outcome.status, outcome.error_type, outcome.stream_failed = 502, err.kind, True
        await send({"type": "http.response.body", "body": encoder.error(err), "more_body": True})
    finally:
        watching = False
        disconnect.cancel()
    await send({"type": "http.response.body", "body": b""})


async def decoded(response: Response, decoder: StreamDecoder, secret: str = "") -> AsyncIterator[list]:
    """Canonical event batches from a provider's stream; an error event it sends has the key scrubbed."""
    try:
        async for chunk in response.iter_chunks():
            yield decoder.feed(chunk)
        yield decoder.close()
    except GatewayError as err:
        raise scrub_error(err, secret) from None


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
