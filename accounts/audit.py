"""Writing audit events. Callers pass details without secrets; a value that could be one is dropped anyway.

The client address of the current web request is picked up from a context variable that
`AuditContextMiddleware` sets, so service functions need not thread it through every call. Sign-ins
and failed sign-ins are recorded from Django's auth signals (connected in `AccountsConfig.ready`).
"""

import contextvars
import json
from collections.abc import Callable
from typing import Any

from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from accounts.csv_export import csv_response
from accounts.models import AuditEvent, Team

# A detail key containing one of these names a secret or says something about one.
_SECRET_WORDS = ("secret", "password", "passwd", "token_value", "api_key", "apikey", "plaintext", "invite_code",
                 "authorization", "private_key", "ciphertext")
_request_ip: contextvars.ContextVar[str | None] = contextvars.ContextVar("ds2api_audit_ip", default=None)


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
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_label=(actor_label or (getattr(actor, "get_username", lambda: "")() if actor else "system"))[:150],
        team=team,
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        ip=ip or _request_ip.get(),
        details=without_secrets(details or {}),
    )


def without_secrets(details: dict[str, Any]) -> dict[str, Any]:
    """`details` minus every value that could be a secret, at any depth.

    Under a key that names a secret ("secret", "new_password", "secret_key", "api_key_hint" ...) only a flag
    survives (true/false/null: "secret_changed": true says a secret changed, never what it is); strings,
    numbers and lists there are dropped. Other keys are kept; nested mappings are cleaned the same way.
    """
    clean: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, dict):
            clean[key] = without_secrets(value)
        elif value is None or isinstance(value, bool) or not any(word in str(key).lower() for word in _SECRET_WORDS):
            clean[key] = value
    return clean


CSV_COLUMNS = ["time_utc", "actor", "team", "action", "target_type", "target_id", "target", "ip", "details"]


CSV_ROW_LIMIT = 100_000


def csv_row(event: AuditEvent) -> list:
    """One event as a CSV row under CSV_COLUMNS."""
    return [event.created_at.isoformat(), event.actor_label, event.team.name if event.team else "", event.action,
            event.target_type, event.target_id, event.target_repr, event.ip or "",
            json.dumps(event.details, sort_keys=True) if event.details else ""]


def csv_download(filename: str, events: QuerySet[AuditEvent]) -> HttpResponse:
    """The audit CSV export of the dashboard and the API alike: `events` (filtered and ordered) as CSV_COLUMNS
    rows, at most CSV_ROW_LIMIT of them."""
    return csv_response(filename, CSV_COLUMNS, (csv_row(event) for event in events[:CSV_ROW_LIMIT].iterator()))


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: trusting X-Forwarded-For would let anyone write any address into the log.
    # Behind a reverse proxy, run the server with its proxy-headers option so REMOTE_ADDR is right.
    return request.META.get("REMOTE_ADDR") or None


class AuditContextMiddleware:
    """Makes the request's client address available to `record()` for the duration of the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request_ip.set(client_ip(request))
        try:
            return self.get_response(request)
        finally:
            _request_ip.reset(token)


def on_login(sender, request, user, **kwargs) -> None:
    record("auth.login", user, actor=user, ip=client_ip(request) if request else None)


def on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    # Django has already replaced the password in `credentials`; only the attempted name is kept.
    username = str(credentials.get("username", ""))[:150]
    record("auth.login_failed", actor_label=username or "(no username)",
           ip=client_ip(request) if request else None, details={"username": username})
