"""One-shot upstream calls beside generation: embeddings and token counts.

They run through the generation pipeline itself (`SidePipeline` overrides its hooks): token, budget, route,
model permissions, a credential leased through the shared limits, failover within the route's retry budget,
health feedback, error answers in the client's protocol and one usage row are the pipeline's own code. Only
an attempt differs: one JSON request, one JSON answer. Each operation supplies a `SideCall`: what it can ask
which upstream kind, and how to read the answers.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from proxy import attempts
from proxy.adapters.base import ClientProtocol, UpstreamRequest
from proxy.asgi_io import JSON_HEADERS, Receive, Scope, Send
from proxy.canonical import GatewayError, Usage
from proxy.outcome import Outcome
from proxy.pipeline import Pipeline, begin_attempt, route_headers
from proxy.redact import scrub_error
from proxy.upstream import header_dict, read_capped
from routing.limits import Lease, Settlement
from routing.ratelimit_headers import parse_headers
from routing.selector import Candidate
from routing.snapshot import RouteInfo, Snapshot


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
    stream = False  # one JSON answer (the pipeline's usage row reads this)
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


class SidePipeline(Pipeline):
    """The generation pipeline with a side call in place of a canonical request."""

    def _parse(self, protocol: ClientProtocol, body, make_call) -> SideCall:
        return make_call(body)

    def _plan(self, route: RouteInfo, snapshot: Snapshot, pin: str | None, call: SideCall) -> list[Candidate]:
        plan = super()._plan(route, snapshot, pin, call)
        if call.kinds:
            plan = [c for c in plan if c.target.provider.kind in call.kinds]
        if not plan:
            raise GatewayError("invalid_request", f"the model '{call.model}' does not support this operation",
                               param="model")
        return plan

    def _estimate(self, call: SideCall) -> int:
        return call.estimate

    async def _attempt(self, receive, send, protocol, make_call, call: SideCall, candidate: Candidate, lease: Lease,
                       request_id: str, outcome: Outcome, prompt_estimate: int) -> bool:
        """One JSON request on one credential. Raises attempts.Retry when another credential may still serve."""
        provider = candidate.target.provider
        upstream_model = begin_attempt(outcome, candidate, call.model)
        verdict, error, headroom, retry_after = "client", "", None, None
        try:
            try:
                upstream = call.build(candidate, upstream_model)
            except orjson.JSONEncodeError as exc:
                raise attempts.unforwardable(exc) from None
            if upstream is None:
                answer = call.answer_locally(provider.kind)
            else:
                try:
                    response = await self._post(upstream, candidate)
                except attempts.TRANSPORT_ERRORS as exc:
                    raise attempts.unreachable(exc, provider.name) from None
                try:
                    headroom = parse_headers(response.headers)
                    if 300 <= response.status < 400:
                        raise attempts.redirected(response.status, provider.name)
                    body = await read_capped(response)
                    if response.status >= 400:
                        err = scrub_error(call.parse_error(provider.kind, response.status, header_dict(response),
                                                           body), candidate.credential.secret)
                        raise attempts.refusal(response.status, err, headroom, provider.name)
                    try:
                        answer = call.answer(provider.kind, body)
                    except GatewayError as err:
                        raise attempts.unreadable(err) from None
                except attempts.TRANSPORT_ERRORS as exc:  # the body broke off: another credential may answer
                    raise attempts.broke_off(exc, provider.name) from None
                finally:
                    response.release()
            verdict = "ok"
            outcome.upstream_started = outcome.usage_reported = True
            outcome.usage = answer.usage
            headers = JSON_HEADERS + route_headers(request_id, candidate.route, provider.name) + list(answer.headers)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": orjson.dumps(answer.body)})
            return True
        except attempts.Retry as retry:
            verdict, error, retry_after = retry.verdict, retry.note, retry.retry_after
            raise
        finally:
            self.runtime.limits.settle(Settlement(lease, verdict, outcome.tokens_to_charge(prompt_estimate),
                                                  retry_after, error, headroom))


async def serve(app, scope: Scope, receive: Receive, send: Send, protocol_name: str, make_call) -> None:
    """Run one side call for a client speaking `protocol_name`; `make_call(body)` parses the body."""
    await SidePipeline(app.runtime).handle(scope, receive, send, protocol_name, make_call)
