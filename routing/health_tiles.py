"""The dashboard's view of credential health: one small, JSON-ready dict per credential tile.

A thin layer over `routing.selectors.credential_health` (the routing layer's truth: Redis, or its
database mirror) shared by the overview page's first render and the live feed, so a tile looks the same
whether the server rendered it or a websocket message patched it. Values are plain JSON (times as epoch
seconds) because they travel over the channel layer, and a secret appears only as its masked last four.
A local provider's credential tile also carries its model's state in this process (`local`: loaded or not,
memory, tokens/s), from `proxy.local_models.status`, which never loads a model or imports torch.
"""

from collections.abc import Iterable
from datetime import datetime

from proxy.local_models import status as local_model_status
from routing.models import Credential, ProviderKind
from routing.selectors import credential_health

DISABLED = "disabled"


def _epoch(value) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if value else None


def credential_tiles(credential_ids: Iterable[int] | None = None) -> list[dict]:
    ids = list(credential_ids) if credential_ids is not None else None
    health = credential_health(ids)
    providers = {
        pk: (enabled, provider_id if kind == ProviderKind.LOCAL else None)
        for pk, enabled, provider_id, kind in Credential.objects.filter(
            pk__in=[h["credential_id"] for h in health]).values_list("pk", "provider__enabled", "provider_id",
                                                                       "provider__kind")
    }
    tiles = []
    for h in health:
        provider_enabled, local_provider = providers.get(h["credential_id"], (True, None))
        enabled = bool(h.get("enabled")) and provider_enabled
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
                "local": _local_state(local_provider) if local_provider is not None else None,
            }
        )
    return tiles


def _local_state(provider_id: int) -> dict:
    state = local_model_status(provider_id)
    return {"provider_id": provider_id, "loaded": bool(state.get("loaded")), "loading": bool(state.get("loading")),
            "memory_bytes": int(state.get("memory_bytes") or 0), "tokens_per_s": state.get("tokens_per_s")}
