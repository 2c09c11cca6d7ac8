"""Audit events keep what a change did and never the secret it carried; the dashboard and the API export the
same CSV."""

import csv
import io

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts import audit, services
from accounts.models import AuditEvent
from routing import services as routing_services
from tests.factories import make_world

pytestmark = pytest.mark.django_db


def test_a_replaced_credential_secret_is_flagged_but_never_recorded():
    provider = routing_services.save_provider("openai-main", kind="openai", base_url="https://api.openai.com/v1")
    credential = routing_services.save_credential(provider, "acct-1", secret="sk-first-secret-1111")
    routing_services.save_credential(provider, "acct-1", secret="sk-replacement-secret-2222")
    routing_services.save_credential(provider, "acct-1", rpm=10)  # no new secret

    updates = AuditEvent.objects.filter(action="credential.update", target_id=str(credential.pk)).order_by("id")
    assert [e.details["secret_changed"] for e in updates] == [True, False]
    assert "sk-replacement-secret-2222" not in str(list(AuditEvent.objects.values_list("details", flat=True)))


def test_secret_values_are_dropped_at_any_depth_and_flags_kept():
    event = audit.record("credential.update", details={
        "secret_changed": True,
        "password_reset": None,
        "secret": "sk-plain-1111",
        "secret_key": "sk-under-a-key-2222",
        "new_password": "hunter2-3333",
        "api_key_hint": 4444,
        "fields": ["rpm", "secret"],
        "provider": {"name": "openai-main", "api_key": "sk-nested-5555", "secret_changed": False},
    })
    event.refresh_from_db()
    assert event.details == {
        "secret_changed": True,
        "password_reset": None,
        "fields": ["rpm", "secret"],
        "provider": {"name": "openai-main", "secret_changed": False},
    }
    assert not any(value in str(event.details) for value in ("1111", "2222", "3333", "4444", "5555"))


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_dashboard_and_api_download_the_same_audit_csv():
    world = make_world()
    owner = world.user("owner")
    issued = services.issue_token(world.team, "=cmd|calc", actor=owner)
    services.update_token(issued.token, rpm=5, actor=owner)

    browser = Client()
    browser.force_login(owner)
    page = _csv(browser.get("/audit/", {"format": "csv", "action": "token."}))
    api = APIClient()
    api.force_login(owner)
    exported = _csv(api.get("/api/audit-events/export/", {"action": "token."}))

    assert page[0] == exported[0] == audit.CSV_COLUMNS  # details included on both
    assert page == exported
    assert [row[3] for row in page[1:]] == ["token.update", "token.create"]
    assert '{"fields": ["rpm"]}' in page[1]
