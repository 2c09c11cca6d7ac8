"""The dashboard's view of credential health: one small, JSON-ready dict per credential tile.

A thin layer over `routing.selectors.credential_health` (the routing layer's truth: Redis, or its
database mirror) shared by the overview page's first render and the live feed, so a tile looks the same
whether the server rendered it or a websocket message patched it. Values are plain JSON (times as epoch
seconds) because they travel over the channel layer, and a secret appears only as its masked last four.
"""

from collections.abc import Iterable
from datetime import datetime

from routing.models import Credential
from routing.selectors import credential_health

DISABLED = "disabled"


def _epoch(value) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if value else None


def credential_tiles(credential_ids: Iterable[int] | None = None) -> list[dict]:
    ids = list(credential_ids) if credential_ids is not None else None
    health = credential_health(ids)
    providers = dict(
        Credential.objects.filter(pk__in=[h["credential_id"] for h in health]).values_list("pk", "provider__enabled")
    )
    tiles = []
    for h in health:
        enabled = bool(h.get("enabled")) and providers.get(h["credential_id"], True)
        tiles.append(
            {
                "id": h["credential_id"],
                "name": h["name"],
                "provider": h["provider"],
                "masked": h["masked"],
                "enabled": enabled,
                "status": h["status"] if enabled else DISABLED,
                "cooldown_until": _epoch(h.get("cooldown_until")),
                "last_error": h.get("last_error") or "",
                "last_error_at": _epoch(h.get("last_error_at")),
                "in_flight": h.get("in_flight"),
                "max_inflight": h.get("max_inflight"),
                "remaining_requests": h.get("remaining_requests"),
                "limit_requests": h.get("limit_requests"),
                "remaining_tokens": h.get("remaining_tokens"),
                "limit_tokens": h.get("limit_tokens"),
                "live": bool(h.get("live")),
            }
        )
    return tiles
