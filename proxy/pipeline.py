"""The generation pipeline: client body -> canonical request -> upstream call -> client response.

Plain or streamed; streamed responses are translated event by event as bytes arrive. A credential is taken
through the shared limits (one Redis round trip), waiting in a fair queue when every eligible one is busy.
Before the first byte reaches the client, a failing attempt (connect error, timeout, 429, 401/403, 5xx, a
stream that breaks early) moves on to the next credential or target within the route's retry budget; after
it, the stream ends with the protocol's own error event. Each attempt's outcome feeds the credential's
health (cooldowns, invalid keys, headroom). Exactly one usage row is recorded per request, whatever happens.

Side calls (embeddings, token counts: `proxy.side_calls`) run through this same class: a subclass overrides
the hooks `_parse`, `_plan`, `_estimate` and `_attempt`, so intake, permissions, the attempt loop, error
answers and the usage row are written once. How an attempt fails is in `proxy.attempts`.
"""

import asyncio
import logging
import math
import time
import uuid

import orjson

from accounts import budgets
from proxy import metrics
from proxy.adapters import client_protocol, upstream_adapter
from proxy.adapters.base import ClientProtocol, InboundCall
from proxy.asgi_io import (
    JSON_HEADERS,
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    header,
    read_body,
)
from proxy.attempts import (
    TRANSPORT_ERRORS,
    Retry,
    broke_off,
    redirected,
    refusal,
    unforwardable,
    unreachable,
    unreadable,
)
from proxy.auth import authenticate
from proxy.canonical import CanonicalRequest, GatewayError
from proxy.estimate import request_tokens_quick
from proxy.outcome import Outcome
from proxy.redact import scrub_error
from proxy.relay import SHUTTING_DOWN, FailedBeforeFirstByte, decoded, relay, send_result
from proxy.runtime import Runtime
from proxy.stored_bodies import BodyCapture
from proxy.upstream import header_dict, read_capped
from routing.limits import Lease, Settlement
from routing.ratelimit_headers import parse_headers
from routing.selector import Candidate
from routing.snapshot import RouteInfo, Snapshot, TokenInfo, model_allowed

__all__ = ["Outcome", "Pipeline"]

log = logging.getLogger(__name__)

PIN_HEADER = b"x-ds2-target-account"


def route_headers(request_id: str, route: RouteInfo | None, provider: str | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-request-id", request_id.encode())]
    if route is not None:
        headers.append((b"x-ds2-route", route.model.encode()))
    if provider:
        headers.append((b"x-ds2-provider", provider.encode()))
    return headers


class StartTracking:
    """The ASGI send callable, remembering whether the response has begun (so an error is never sent twice)."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send, self.started = send, False

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class Pipeline:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, scope: Scope, receive: Receive, send: Send, protocol_name: str, call: InboundCall) -> None:
        send = StartTracking(send)
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
            await budgets.check(token)  # 429 budget_exceeded once the token's or team's month is spent
            try:
                raw = await read_body(receive, self.runtime.max_body)
            except BodyTooLarge:
                raise GatewayError("too_large", f"request body exceeds {self.runtime.max_body} bytes") from None
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise GatewayError("invalid_request", "the request body is not valid JSON") from None
            try:
                request = self._parse(protocol, body, call)
            except RecursionError:
                raise GatewayError("invalid_request", "the request body is nested too deeply") from None
            route = snapshot.route_for(request.model)
            if route is None or not model_allowed(request.model, token.team.allowed_models):
                raise GatewayError("not_found", f"the model '{request.model}' does not exist", param="model",
                                   code="model_not_found")
            if not model_allowed(request.model, token.allowed_models):
                raise GatewayError("permission", f"this token may not use the model '{request.model}'", param="model")
            if route.log_bodies:
                outcome.bodies = BodyCapture(request_id, token.team.id, raw)
            sent_start = await self._forward(scope, receive, send, protocol, call, request, route, token, snapshot,
                                             request_id, outcome)
        except GatewayError as err:
            outcome.status, outcome.error_type = err.status, err.kind
            if not sent_start and not send.started:
                await self._send_error(send, protocol, err, request_id, route)
        except ClientDisconnected:
            outcome.status, outcome.error_type = 499, "client_disconnected"
        except asyncio.CancelledError:
            # Only a stopping server cancels a request (its grace period ran out): tell the client to retry.
            if outcome.status < 400:
                outcome.status, outcome.error_type = 503, "shutdown"
            if not send.started:
                await self._send_error(send, protocol, SHUTTING_DOWN, request_id, route)
            raise
        except Exception:
            # A bug must not reach the client as a bare 500 page or leave the request unrecorded: answer in the
            # client's protocol (unless the response already started) and keep the usage row.
            log.exception("unexpected error handling a %s request (%s)", protocol_name, request_id)
            err = GatewayError("internal", f"the gateway failed to handle this request (request id {request_id})")
            outcome.status, outcome.error_type = err.status, err.kind
            if not send.started:
                await self._send_error(send, protocol, err, request_id, route)
        finally:
            self._record(request_id, protocol_name, token, request, route, outcome, started)

    async def _send_error(self, send: Send, protocol: ClientProtocol, err: GatewayError, request_id: str,
                          route: RouteInfo | None) -> None:
        headers = JSON_HEADERS + route_headers(request_id, route, None)
        if err.retry_after is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(err.retry_after))).encode()))
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps(protocol.render_error(err))})

    # --- hooks a subclass overrides (proxy.side_calls) --------------------------------------------------------

    def _parse(self, protocol: ClientProtocol, body, call):
        """The request the rest of the pipeline works on (it has `.model` and `.stream`)."""
        return protocol.parse_request(body, call)

    def _plan(self, route: RouteInfo, snapshot: Snapshot, pin: str | None, request) -> list[Candidate]:
        plan = self.runtime.selector.plan(route, snapshot, pin)
        if not plan:
            if pin is not None:
                raise GatewayError("invalid_request", f"no credential '{pin}' serves the model '{request.model}'")
            raise GatewayError("overloaded", f"no provider credential is available for '{request.model}'")
        return plan

    def _estimate(self, request) -> int:
        """Prompt tokens charged against tokens-per-minute limits until the real count is known."""
        return request_tokens_quick(request)

    # -------------------------------------------------------------------------------------------------------------

    async def _forward(self, scope, receive, send, protocol, call, request, route, token, snapshot: Snapshot,
                       request_id, outcome) -> bool:
        pin_raw = header(scope, PIN_HEADER)
        pin = pin_raw.decode("latin-1").strip() if pin_raw else None
        if pin is not None and not token.is_admin:
            raise GatewayError("permission", "only admin tokens may pin a request with X-Ds2-Target-Account")
        plan = self._plan(route, snapshot, pin, request)
        prompt_estimate = self._estimate(request)
        tried: set[int] = set()
        last_error: GatewayError | None = None
        while outcome.attempts <= route.retry_budget:
            remaining = [c for c in plan if c.credential.id not in tried]
            if not remaining:
                break
            grant = await self.runtime.admission.admit(route, remaining, token, prompt_estimate, pin,
                                                       retry=bool(tried))
            if grant is None:  # a retry found nothing free right now: report the failure we had
                break
            candidate, lease = grant
            try:
                return await self._attempt(receive, send, protocol, call, request, candidate, lease, request_id,
                                           outcome, prompt_estimate)
            except Retry as retry:
                last_error = retry.error
                tried.add(candidate.credential.id)
        raise last_error or GatewayError("overloaded", "no provider credential is available")

    async def _attempt(self, receive, send, protocol, call, request, candidate: Candidate, lease: Lease,
                       request_id, outcome: Outcome, prompt_estimate: int) -> bool:
        """One try on one credential. Raises Retry when another credential may still serve."""
        credential, provider = candidate.credential, candidate.target.provider
        adapter = upstream_adapter(provider.kind)
        upstream_model = begin_attempt(outcome, candidate, request.model)
        headers = JSON_HEADERS + route_headers(request_id, candidate.route, provider.name)
        verdict, error, headroom, retry_after = "client", "", None, None
        started = time.perf_counter()
        try:
            if adapter.in_process:
                verdict = "fail"
                sent = await self._in_process(send, receive, protocol, call, request, adapter, upstream_model,
                                              provider, headers, outcome, started)
                verdict = "ok"
                return sent
            try:
                upstream_request = adapter.build_request(
                    request, upstream_model=upstream_model, base_url=provider.base_url, secret=credential.secret,
                    extra_headers=provider.extra_headers,
                )
            except orjson.JSONEncodeError as exc:
                raise unforwardable(exc) from None
            try:
                response = await self._post(upstream_request, candidate)
            except TRANSPORT_ERRORS as exc:
                raise unreachable(exc, provider.name) from None
            try:
                headroom = parse_headers(response.headers)
                if response.status >= 300:
                    if response.status < 400:
                        raise redirected(response.status, provider.name)
                    err = scrub_error(adapter.parse_error(response.status, header_dict(response),
                                                          await read_capped(response)), credential.secret)
                    raise refusal(response.status, err, headroom, provider.name)
                verdict = "ok"
                if not request.stream:
                    try:
                        result = adapter.parse_response(await read_capped(response), request)
                    except GatewayError as err:
                        raise unreadable(scrub_error(err, credential.secret)) from None
                    await send_result(send, protocol, request, result, headers, outcome)
                    self._observe(candidate, started)
                    return True
                try:
                    await relay(receive, send, protocol, call, request,
                                decoded(response, adapter.stream_decoder(request), credential.secret), headers, outcome,
                                started)
                except FailedBeforeFirstByte as failed:
                    raise Retry(failed.error, note=f"stream failed: {failed.error.message}") from None
                if outcome.stream_failed:
                    verdict, error = "fail", "stream failed after the first byte"
                else:
                    self._observe(candidate, started)
                return True
            except TRANSPORT_ERRORS as exc:  # the body broke off (reset, short read) before the client saw it
                raise broke_off(exc, provider.name) from None
            finally:
                response.release()
        except Retry as retry:
            verdict, error, retry_after = retry.verdict, retry.note, retry.retry_after
            raise
        finally:
            self.runtime.limits.settle(Settlement(lease, verdict, outcome.tokens_to_charge(prompt_estimate),
                                                  retry_after, error, headroom))

    def _post(self, upstream_request, candidate: Candidate):
        """One attempt's upstream call with the provider's timeouts: the client's own coroutine, for the caller
        to await (no wrapper on the hot path)."""
        provider = candidate.target.provider
        return self.runtime.upstream.post(
            upstream_request,
            connect_timeout=provider.connect_timeout or self.runtime.connect_timeout,
            read_timeout=provider.read_timeout or self.runtime.read_timeout,
            total=candidate.route.timeout,
        )

    def _observe(self, candidate: Candidate, started: float) -> None:
        self.runtime.selector.observe_latency(candidate.credential.id, candidate.target.upstream_model,
                                              time.perf_counter() - started)

    async def _in_process(self, send, receive, protocol, call, request, adapter, upstream_model, provider,
                          headers, outcome, started) -> bool:
        if not request.stream:
            result = await adapter.complete(request, upstream_model=upstream_model, provider=provider)
            await send_result(send, protocol, request, result, headers, outcome)
            return True
        batches = adapter.stream(request, upstream_model=upstream_model, provider=provider)
        try:
            await relay(receive, send, protocol, call, request, batches, headers, outcome, started)
        except FailedBeforeFirstByte as failed:
            raise failed.error from None
        finally:
            await batches.aclose()
        return True

    def _record(self, request_id, protocol_name, token, request, route, outcome: Outcome, started) -> None:
        usage = outcome.final_usage(request)
        self.runtime.usage.add(
            request_id=request_id,
            token_id=token.id if token else None,
            team_id=token.team.id if token else None,
            route_id=outcome.route_id or (route.id if route else None),
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
        if outcome.bodies is not None:
            self.runtime.usage.add_body(outcome.bodies)
        metrics.observe_request(self.runtime, request_id, protocol_name, token, request, route, outcome, usage, started)



def begin_attempt(outcome: Outcome, candidate: Candidate, model: str) -> str:
    """Start an attempt on `candidate` (the usage row names its credential); returns the upstream model."""
    provider = candidate.target.provider
    upstream_model = candidate.target.upstream_model or model
    outcome.begin_attempt()
    outcome.credential_id, outcome.provider_id, outcome.route_id = candidate.credential.id, provider.id, candidate.route.id
    outcome.upstream_kind, outcome.upstream_model = provider.kind, upstream_model
    return upstream_model
