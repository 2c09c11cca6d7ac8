"""The generation pipeline: client body -> canonical request -> upstream call -> client response.

Plain or streamed; streamed responses are translated event by event as bytes arrive. Before the first
byte reaches the client, a failing attempt (connect error, timeout, 429, 5xx) moves on to the next
candidate credential within the route's retry budget; after it, the stream ends with the protocol's own
error event. Exactly one usage row is recorded per request, whatever happens.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson

from proxy.adapters import client_protocol, upstream_adapter
from proxy.adapters.base import ClientProtocol, InboundCall, StreamDecoder
from proxy.asgi_io import JSON_HEADERS, BodyTooLarge, ClientDisconnected, Receive, Scope, Send, read_body
from proxy.auth import authenticate
from proxy.canonical import CanonicalRequest, GatewayError, StreamEnd, StreamStart, Usage
from proxy.runtime import Runtime
from routing.snapshot import RouteInfo, TokenInfo, model_allowed

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}


@dataclass(slots=True)
class Outcome:
    """What the usage row will say about this request."""

    status: int = 200
    usage: Usage = field(default_factory=Usage)
    error_type: str = ""
    ttfb_ms: int | None = None
    attempts: int = 0
    credential_id: int | None = None
    provider_id: int | None = None
    upstream_kind: str = ""
    upstream_model: str = ""


def _route_headers(request_id: str, route: RouteInfo | None, provider: str | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-request-id", request_id.encode())]
    if route is not None:
        headers.append((b"x-ds2-route", route.model.encode()))
    if provider:
        headers.append((b"x-ds2-provider", provider.encode()))
    return headers


class Pipeline:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, scope: Scope, receive: Receive, send: Send, protocol_name: str, call: InboundCall) -> None:
        protocol = client_protocol(protocol_name)
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        outcome = Outcome()
        token: TokenInfo | None = None
        request: CanonicalRequest | None = None
        route: RouteInfo | None = None
        sent_start = False
        try:
            snapshot = await self.runtime.config.get()
            token = authenticate(scope, snapshot)
            try:
                raw = await read_body(receive, self.runtime.max_body)
            except BodyTooLarge:
                raise GatewayError("too_large", f"request body exceeds {self.runtime.max_body} bytes") from None
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise GatewayError("invalid_request", "the request body is not valid JSON") from None
            request = protocol.parse_request(body, call)
            route = snapshot.route_for(request.model)
            if route is None or not model_allowed(request.model, token.team.allowed_models):
                raise GatewayError("not_found", f"the model '{request.model}' does not exist", param="model",
                                   code="model_not_found")
            if not model_allowed(request.model, token.allowed_models):
                raise GatewayError("permission", f"this token may not use the model '{request.model}'", param="model")
            sent_start = await self._forward(scope, receive, send, protocol, call, request, route, request_id, outcome)
        except GatewayError as err:
            outcome.status, outcome.error_type = err.status, err.kind
            if not sent_start:
                await self._send_error(send, protocol, err, request_id, route)
        except ClientDisconnected:
            outcome.status, outcome.error_type = 499, "client_disconnected"
        finally:
            self._record(request_id, protocol_name, token, request, route, outcome, started)

    async def _send_error(self, send: Send, protocol: ClientProtocol, err: GatewayError, request_id: str,
                          route: RouteInfo | None) -> None:
        headers = JSON_HEADERS + _route_headers(request_id, route, None)
        if err.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(err.retry_after))).encode()))
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps(protocol.render_error(err))})

    async def _forward(self, scope, receive, send, protocol, call, request, route, request_id, outcome) -> bool:
        candidates = self.runtime.selector.candidates(route)
        if not candidates:
            raise GatewayError("overloaded", f"no provider credential is available for '{request.model}'")
        last_error: GatewayError | None = None
        for target, credential in candidates[: route.retry_budget + 1]:
            provider = target.provider
            adapter = upstream_adapter(provider.kind)
            upstream_model = target.upstream_model or request.model
            outcome.attempts += 1
            outcome.credential_id, outcome.provider_id = credential.id, provider.id
            outcome.upstream_kind, outcome.upstream_model = provider.kind, upstream_model
            headers = JSON_HEADERS + _route_headers(request_id, route, provider.name)
            if adapter.in_process:
                return await self._in_process(send, protocol, call, request, adapter, upstream_model, provider,
                                              receive, headers, outcome)
            upstream_request = adapter.build_request(
                request, upstream_model=upstream_model, base_url=provider.base_url, secret=credential.secret,
                extra_headers=provider.extra_headers,
            )
            try:
                response = await self.runtime.upstream.post(
                    upstream_request,
                    connect_timeout=provider.connect_timeout or self.runtime.connect_timeout,
                    read_timeout=provider.read_timeout or self.runtime.read_timeout,
                    total=route.timeout,
                )
            except TimeoutError:
                last_error = GatewayError("timeout", f"the provider did not answer in time ({provider.name})")
                continue
            except aiohttp.ClientError:
                last_error = GatewayError("upstream", f"could not reach the provider ({provider.name})", status=502)
                continue
            try:
                if response.status >= 400:
                    body = await response.read()
                    last_error = adapter.parse_error(response.status, dict(response.headers), body)
                    if response.status in RETRYABLE_STATUS:
                        continue
                    raise last_error
                if not request.stream:
                    result = adapter.parse_response(await response.read(), request)
                    await self._send_result(send, protocol, request, result, headers, outcome)
                    return True
                decoder = adapter.stream_decoder(request)
                return await self._relay(receive, send, protocol, call, request, _decoded(response, decoder),
                                         headers, outcome)
            finally:
                response.release()
        raise last_error or GatewayError("overloaded", "no provider credential is available")

    async def _send_result(self, send, protocol, request, result, headers, outcome) -> None:
        result.model = request.model
        outcome.usage = result.usage
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps(protocol.render_response(result, request))})

    async def _in_process(self, send, protocol, call, request, adapter, upstream_model, provider, receive,
                          headers, outcome) -> bool:
        if not request.stream:
            result = await adapter.complete(request, upstream_model=upstream_model, provider=provider)
            await self._send_result(send, protocol, request, result, headers, outcome)
            return True
        batches = adapter.stream(request, upstream_model=upstream_model, provider=provider)
        try:
            return await self._relay(receive, send, protocol, call, request, batches, headers, outcome)
        finally:
            await batches.aclose()

    async def _relay(self, receive, send, protocol, call, request, batches, headers, outcome) -> bool:
        """Translate batches of canonical events into the client's stream framing as they arrive."""
        encoder = protocol.stream_encoder(request, call)
        stream_headers = [(b"content-type", encoder.content_type), (b"cache-control", b"no-cache")] + headers[1:]
        started = time.perf_counter()
        sent_start = False
        disconnect = asyncio.ensure_future(_wait_disconnect(receive))

        async def emit(events: list) -> None:
            nonlocal sent_start
            out = []
            for event in events:
                if isinstance(event, StreamStart):
                    event.model = request.model
                elif isinstance(event, StreamEnd):
                    outcome.usage = event.usage
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
                await emit(events)
        except (GatewayError, aiohttp.ClientError, TimeoutError) as exc:
            err = exc if isinstance(exc, GatewayError) else GatewayError("upstream", "the provider's stream failed")
            if not sent_start:
                raise err from None
            outcome.status, outcome.error_type = 502, err.kind
            await send({"type": "http.response.body", "body": encoder.error(err), "more_body": True})
        finally:
            disconnect.cancel()
        await send({"type": "http.response.body", "body": b""})
        return True

    def _record(self, request_id, protocol_name, token, request, route, outcome: Outcome, started) -> None:
        usage = outcome.usage
        self.runtime.usage.add(
            request_id=request_id,
            token_id=token.id if token else None,
            team_id=token.team.id if token else None,
            route_id=route.id if route else None,
            credential_id=outcome.credential_id,
            provider_id=outcome.provider_id,
            client_protocol=protocol_name,
            upstream_kind=outcome.upstream_kind,
            client_model=(request.model if request else "")[:200],
            upstream_model=outcome.upstream_model[:200],
            status=outcome.status,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            estimated=usage.estimated,
            latency_ms=int((time.perf_counter() - started) * 1000),
            ttfb_ms=outcome.ttfb_ms,
            streamed=bool(request and request.stream),
            attempts=max(outcome.attempts, 1),
            error_type=outcome.error_type,
        )


async def _decoded(response: aiohttp.ClientResponse, decoder: StreamDecoder) -> AsyncIterator[list]:
    async for chunk in response.content.iter_any():
        yield decoder.feed(chunk)
    yield decoder.close()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
