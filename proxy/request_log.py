"""One structured line per proxied request on the `ds2api.requests` logger (JSON, see ds2api_site/jsonlog.py).

Ids, route, provider and credential names, status, latency and tokens: enough to trace a request whose
id a client reports (the same id goes out in the `x-request-id` header) without a database query. Never a
secret, a token value or a prompt. Off with DS2API_REQUEST_LOG=0.
"""

import logging

from django.conf import settings

log = logging.getLogger("ds2api.requests")


def emit(request_id: str, protocol: str, token, request, route: str, provider: str, credential: str, outcome, usage,
         latency_ms: int) -> None:
    if not settings.DS2API_REQUEST_LOG or not log.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": request_id,
        "protocol": protocol,
        "team_id": token.team.id if token else None,
        "team": token.team.name if token else None,
        "token_id": token.id if token else None,
        "token": token.name if token else None,
        "model": request.model if request else None,
        "route": route,
        "provider": provider,
        "credential": credential,
        "upstream_model": outcome.upstream_model or None,
        "status": outcome.status,
        "error_type": outcome.error_type or None,
        "latency_ms": latency_ms,
        "ttfb_ms": outcome.ttfb_ms,
        "attempts": max(outcome.attempts, 1),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "estimated": usage.estimated,
    }
    # makeRecord + handle rather than log.info(): skips the caller lookup (a stack walk) on the hot path.
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "request", (), None, extra={"fields": fields}))
