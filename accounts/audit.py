"""Writing audit events. Callers pass details without secrets; keys that look secret are dropped anyway."""

from typing import Any

from django.db import models

from accounts.models import AuditEvent, Team

_SECRET_WORDS = ("secret", "password", "token_value", "api_key", "plaintext")


def record(
    action: str,
    target: models.Model | None = None,
    *,
    actor=None,
    actor_label: str = "",
    team: Team | None = None,
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    clean = {k: v for k, v in (details or {}).items() if not any(word in k.lower() for word in _SECRET_WORDS)}
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_label=actor_label or (getattr(actor, "get_username", lambda: "")() if actor else "system"),
        team=team,
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        ip=ip,
        details=clean,
    )
