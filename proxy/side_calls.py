"""One-shot upstream calls beside generation: embeddings and token counts.

They take the same path as a generation request up to the provider (token, budget, route, model
permissions, a credential leased through the shared limits, failover within the route's retry budget,
health feedback, one usage row), then send one JSON request and answer with one JSON body. Each operation
supplies a `SideCall`: what it can ask which upstream kind, and how to read the answers.
"""

import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from accounts import budgets
from proxy.adapters import client_protocol
from proxy.adapters.base import UpstreamRequest
from proxy.asgi_io import JSON_HEADERS, BodyTooLarge, ClientDisconnected, Receive, Scope, Send, read_body
from proxy.auth import authenticate
from proxy.canonical import GatewayError, Usage
from proxy.pipeline import RETRYABLE_STATUS, _classify, _StartTracking, unforwardable
from proxy.redact import scrub_error
from proxy.upstream import header_dict
from routing.limits import Settlement
from routing.ratelimit_headers import parse_headers
from routing.selector import Candidate
from routing.snapshot import RouteInfo, TokenInfo, model_allowed

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Answer:
    body: dict[str, Any]
    usage: Usage
    headers: tuple[tuple[bytes, bytes], ...] = ()


def read_json_object(body: bytes) -> dict[str, Any]:
    """A provider's JSON object answer; anything else is the provider's failure."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError("upstream", "the provider returned an unreadable response") from exc
    if not isinstance(data, dict):
        raise GatewayError("upstream", "the provider returned an unreadable response")
    return data


class SideCall:
    """One operation (e.g. embeddings for an OpenAI client). Subclasses fill these in."""

    kinds: tuple[str, ...] = ()  # upstream kinds able to serve it (empty: any)
    model: str = ""
    estimate: int = 0  # prompt tokens charged against TPM limits before the real count is known

    def build(self, candidate: Candidate, upstream_model: str) -> UpstreamRequest | None:
        """The upstream request, or None when `answer_locally` serves this kind without a call."""
        raise NotImplementedError

    def answer(self, kind: str, body: bytes) -> Answer:
        raise NotImplementedError

    def answer_locally(self, kind: str) -> Answer:
        raise NotImplementedError

    def parse_error(self, kind: str, status: int, headers: dict[str, str], body: bytes) -> GatewayError:
        raise NotImplementedError


async def serve(app, scope: Scope, receive: Receive, send: Send, protocol_name: str, make_call) -> None:
    """Run one side call for a client speaking `protocol_name`; `make_call(body)` parses the body."""
    runtime = app.runtime
    send = _StartTracking(send)
    protocol = client_protocol(protocol_name)
    started = time.perf_counter()
    request_id = uuid.uuid4().hex
    token: TokenInfo | None = None
    route: RouteInfo | None = None
    call: SideCall | None = None
    row: dict[str, Any] = {"status": 200, "attempts": 0, "error_type": "", "usage": Usage()}
    try:
        snapshot = await runtime.config.get()
        token = authenticate(scope, snapshot)
        await budgets.check(token)
        try:
            raw = await read_body(receive, runtime.max_body)
        except BodyTooLarge:
            raise GatewayError("too_large", f"request body exceeds {runtime.max_body} bytes") from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError("invalid_request", "the request body is not valid JSON") from None
        try:
            call = make_call(body)
        except RecursionError:
            raise GatewayError("invalid_request", "the request body is nested too deeply") from None
        route = snapshot.route_for(call.model)
        if route is None or not model_allowed(call.model, token.team.allowed_models):
            raise GatewayError("not_found", f"the model '{call.model}' does not exist", param="model",
                               code="model_not_found")
        if not model_allowed(call.model, token.allowed_models):
            raise GatewayError("permission", f"this token may not use the model '{call.model}'", param="model")
        answer = await _forward(runtime, call, route, token, snapshot, row)
        row["usage"] = answer.usage
        headers = JSON_HEADERS + [(b"x-request-id", request_id.encode())] + list(answer.headers)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps(answer.body)})
    except GatewayError as err:
        row["status"], row["error_type"] = err.status, err.kind
        if not send.started:
            await _send_error(send, protocol, err, request_id)
    except ClientDisconnected:
        row["status"], row["error_type"] = 499, "client_disconnected"
    except Exception:
        # A bug must not reach the client as a bare 500 page or leave the request unrecorded.
        log.exception("unexpected error handling a %s side call (%s)", protocol_name, request_id)
        err = GatewayError("internal", f"the gateway failed to handle this request (request id {request_id})")
        row["status"], row["error_type"] = err.status, err.kind
        if not send.started:
            await _send_error(send, protocol, err, request_id)
    finally:
        usage: Usage = row["usage"]
        runtime.usage.add(
            request_id=request_id, token_id=token.id if token else None, team_id=token.team.id if token else None,
            route_id=row.get("route_id") or (route.id if route else None), credential_id=row.get("credential_id"),
            provider_id=row.get("provider_id"), client_protocol=protocol_name,
            upstream_kind=row.get("upstream_kind", ""), client_model=(call.model if call else "")[:200],
            upstream_model=row.get("upstream_model", "")[:200], status=row["status"],
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens, estimated=usage.estimated,
            latency_ms=int((time.perf_counter() - started) * 1000), ttfb_ms=None, streamed=False,
            attempts=max(row["attempts"], 1), error_type=row["error_type"],
        )


async def _send_error(send: Send, protocol, err: GatewayError, request_id: str) -> None:
    headers = JSON_HEADERS + [(b"x-request-id", request_id.encode())]
    if err.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(err.retry_after))).encode()))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(protocol.render_error(err))})


async def _forward(runtime, call: SideCall, route: RouteInfo, token: TokenInfo, snapshot, row: dict) -> Answer:
    plan = [c for c in runtime.selector.plan(route, snapshot) if not call.kinds or c.target.provider.kind in call.kinds]
    if not plan:
        raise GatewayError("invalid_request", f"the model '{call.model}' does not support this operation",
                           param="model")
    tried: set[int] = set()
    last_error: GatewayError | None = None
    while row["attempts"] <= route.retry_budget:
        remaining = [c for c in plan if c.credential.id not in tried]
        if not remaining:
            break
        grant = await runtime.admission.admit(route, remaining, token, call.estimate, None, retry=bool(tried))
        if grant is None:
            break
        candidate, lease = grant
        provider = candidate.target.provider
        upstream_model = candidate.target.upstream_model or call.model
        row["attempts"] += 1
        row.update(credential_id=candidate.credential.id, provider_id=provider.id, route_id=candidate.route.id,
                   upstream_kind=provider.kind, upstream_model=upstream_model)
        verdict, note, retry_after, headroom, tokens = "client", "", None, None, 0
        try:
            try:
                upstream = call.build(candidate, upstream_model)
            except orjson.JSONEncodeError as exc:
                raise unforwardable(exc) from None
            if upstream is None:
                verdict = "ok"
                return call.answer_locally(provider.kind)
            try:
                response = await runtime.upstream.post(
                    upstream, connect_timeout=provider.connect_timeout or runtime.connect_timeout,
                    read_timeout=provider.read_timeout or runtime.read_timeout, total=candidate.route.timeout)
            except (TimeoutError, aiohttp.ClientError) as exc:
                verdict, note = "fail", f"side call failed: {type(exc).__name__}: {exc}"[:300]
                timed_out = isinstance(exc, TimeoutError)
                last_error = GatewayError("timeout" if timed_out else "upstream",
                                          f"could not get an answer from the provider ({provider.name})")
                tried.add(candidate.credential.id)
                continue
            try:
                headroom = parse_headers(response.headers)
                try:
                    body = await response.read()
                except (TimeoutError, aiohttp.ClientError) as exc:  # the body broke off: another key may answer
                    verdict, note = "fail", f"side call failed: {type(exc).__name__}: {exc}"[:300]
                    last_error = GatewayError("upstream", f"the provider's response broke off ({provider.name})",
                                              status=502)
                    tried.add(candidate.credential.id)
                    continue
                if 300 <= response.status < 400:  # redirects are never followed (SSRF)
                    verdict, note = "fail", f"HTTP {response.status}: redirects are not followed"
                    last_error = GatewayError("upstream", f"the provider answered with a redirect ({provider.name})",
                                              status=502)
                    tried.add(candidate.credential.id)
                    continue
                if response.status >= 400:
                    err = scrub_error(call.parse_error(provider.kind, response.status, header_dict(response), body),
                                      candidate.credential.secret)
                    verdict, note, retry_after = _classify(response.status, err, headroom)
                    note = note or f"HTTP {response.status}: {err.message}"[:300]
                    if verdict == "auth":  # the provider refused our key: the client's own token is fine
                        err = GatewayError("upstream", f"the provider rejected the credential for {provider.name}",
                                           status=502)
                    if verdict == "auth" or response.status in RETRYABLE_STATUS:
                        last_error = err
                        tried.add(candidate.credential.id)
                        continue
                    raise err
                verdict = "ok"
                try:
                    answer = call.answer(provider.kind, body)
                except GatewayError as err:
                    if err.kind != "upstream":
                        raise
                    verdict, note, last_error = "fail", err.message[:300], err  # unreadable: try another key
                    tried.add(candidate.credential.id)
                    continue
                tokens = answer.usage.total_tokens
                return answer
            finally:
                response.release()
        finally:
            runtime.limits.settle(Settlement(lease, verdict, tokens, retry_after, note, headroom))
    raise last_error or GatewayError("overloaded", "no provider credential is available")
