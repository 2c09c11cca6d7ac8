"""Reads on routing data shared by the dashboard, the management API and background jobs."""

import logging

import redis

from routing.health import effective_status, read_health
from routing.models import Credential

log = logging.getLogger(__name__)


def credential_health(credential_ids: list[int] | None = None) -> list[dict]:
    """Health of each credential (all when `credential_ids` is None), in the order asked, for health tiles.

    Each dict: credential_id, name, provider, masked (last 4 only), enabled, status ("ok" | "cooling" |
    "invalid"), cooldown_until, cooldown_seconds, last_error, last_error_at, consecutive_failures, in_flight,
    max_inflight, rpm, tpm, remaining_requests, limit_requests, requests_reset_at, remaining_tokens,
    limit_tokens, tokens_reset_at, headers_seen_at, last_success_at, live (False: Redis was unreachable and
    the values are the last ones mirrored to the database).
    """
    rows = Credential.objects.select_related("provider")
    if credential_ids is not None:
        rows = rows.filter(id__in=credential_ids)
    by_id = {c.id: c for c in rows}
    ids = [cid for cid in (credential_ids if credential_ids is not None else sorted(by_id)) if cid in by_id]
    try:
        live = read_health(ids)
    except redis.RedisError as exc:
        log.warning("credential health read from the database copy (Redis: %s)", exc)
        live = None
    out = []
    for cid in ids:
        c = by_id[cid]
        base = {
            "credential_id": cid, "name": c.name, "provider": c.provider.name, "masked": c.masked,
            "enabled": c.enabled, "max_inflight": c.max_inflight, "rpm": c.rpm, "tpm": c.tpm,
        }
        if live is not None:
            out.append({**base, **live[cid], "live": True})
            continue
        cool_until = c.cooldown_until.timestamp() if c.cooldown_until else 0.0
        status = effective_status(c.health_status, cool_until)
        out.append({
            **base, "status": status, "cooldown_until": c.cooldown_until if status == "cooling" else None,
            "cooldown_seconds": 0.0, "last_error": c.last_error, "last_error_at": c.last_checked_at,
            "consecutive_failures": 0, "in_flight": None, "remaining_requests": None, "limit_requests": None,
            "requests_reset_at": None, "remaining_tokens": None, "limit_tokens": None, "tokens_reset_at": None,
            "headers_seen_at": None, "last_success_at": None, "live": False,
        })
    return out


def preview_route(model: str) -> dict:
    """Which credential would serve `model` now, and why the ones before it would not (dashboard preview).

    Reads the configuration from the database and health from Redis; it reserves nothing, so the answer is
    what the next request would most likely get (the proxy's own turn counters may pick another equal one).
    """
    from routing.selector import Selector
    from routing.snapshot import build_snapshot

    snapshot = build_snapshot()
    route = snapshot.route_for(model)
    if route is None:
        return {"model": model, "route": None, "credential": None, "candidates": []}
    plan = Selector().plan(route, snapshot)
    ids = list(dict.fromkeys(c.credential.id for c in plan))
    try:
        health = read_health(ids)
    except redis.RedisError:
        health = {}
    candidates, chosen = [], None
    for candidate in plan:
        credential = candidate.credential
        state = health.get(credential.id, {"status": "ok", "in_flight": 0})
        full = credential.max_inflight is not None and (state.get("in_flight") or 0) >= credential.max_inflight
        spent = state.get("remaining_requests") == 0
        usable = state["status"] == "ok" and not full and not spent
        entry = {"route": candidate.route.model, "provider": candidate.target.provider.name,
                 "credential": credential.name, "credential_id": credential.id, "tier": candidate.tier,
                 "upstream_model": candidate.target.upstream_model or model, "status": state["status"],
                 "busy": full or spent, "usable": usable}
        candidates.append(entry)
        if usable and chosen is None:
            chosen = entry
    return {"model": model, "route": route.model, "strategy": route.strategy, "credential": chosen,
            "candidates": candidates}
