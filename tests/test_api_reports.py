"""Management API: usage summaries, the audit log with CSV export, prices, and admin-token authentication."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import audit, services
from accounts.models import AuditEvent, ModelPrice
from proxy.models import UsageRecord
from tests.factories import make_world

pytestmark = pytest.mark.django_db
ROLES = ["owner", "admin", "member", "viewer"]


@pytest.fixture
def world():
    return make_world()


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def usage(team, token=None, *, model="gpt-test", days_ago=0, status=200, cost="0.01", **tokens):
    return UsageRecord.objects.create(
        created_at=timezone.now() - timedelta(days=days_ago), team_id=team.pk, token_id=token.pk if token else None,
        client_protocol="openai_chat", client_model=model, status=status, cost_usd=Decimal(cost),
        input_tokens=tokens.get("input", 10), output_tokens=tokens.get("output", 5),
    )


# --- usage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_members_see_their_teams_usage_only(world, who):
    token = services.issue_token(world.team, "ci").token
    usage(world.team, token)
    usage(world.team, token, model="gpt-big", status=500, cost="0.04")
    usage(world.other_team, model="gpt-test", cost="9")
    body = api(world.user(who)).get("/api/usage/", {"group_by": "model"}).json()
    rows = {r["key"]: r for r in body["results"]}
    assert set(rows) == {"gpt-test", "gpt-big"}
    assert (rows["gpt-test"]["requests"], rows["gpt-test"]["cost_usd"]) == (1, "0.01000000")
    assert (rows["gpt-big"]["errors"], rows["gpt-big"]["input_tokens"]) == (1, 10)
    by_token = api(world.user(who)).get("/api/usage/", {"group_by": "token"}).json()["results"]
    assert [(r["key"], r["requests"]) for r in by_token] == [(str(token.pk), 2)]
    assert by_token[0]["label"] == f"alpha/ci ({token.prefix}…)"


def test_outsider_gets_no_usage_of_another_team(world):
    token = services.issue_token(world.team, "ci").token
    usage(world.team, token)
    outsider = api(world.user("outsider"))
    assert outsider.get("/api/usage/").json()["results"] == []
    assert outsider.get("/api/usage/", {"team": world.team.pk}).status_code == 404
    assert outsider.get("/api/usage/", {"token": token.pk}).status_code == 404


def test_usage_by_day_within_a_time_range(world):
    usage(world.team, days_ago=0)
    usage(world.team, days_ago=3)
    usage(world.team, days_ago=40)  # outside the default 30 days
    client = api(world.user("viewer"))
    assert len(client.get("/api/usage/", {"group_by": "day"}).json()["results"]) == 2
    since = (timezone.now() - timedelta(days=1)).isoformat()
    recent = client.get("/api/usage/", {"group_by": "day", "since": since}).json()["results"]
    assert [r["key"] for r in recent] == [timezone.now().date().isoformat()]
    everything = client.get("/api/usage/", {"since": (timezone.now() - timedelta(days=60)).isoformat(),
                                            "group_by": "team"}).json()["results"]
    assert [(r["label"], r["requests"]) for r in everything] == [("alpha", 3)]
    assert client.get("/api/usage/", {"group_by": "nonsense"}).status_code == 400
    assert client.get("/api/usage/", {"since": timezone.now().isoformat(),
                                      "until": (timezone.now() - timedelta(days=1)).isoformat()}).status_code == 400


# --- audit -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("who, visible", [("owner", True), ("admin", True), ("member", False), ("viewer", False),
                                          ("outsider", False)])
def test_audit_log_is_visible_to_team_admins(world, who, visible):
    services.issue_token(world.team, "ci", actor=world.user("owner"))
    event = AuditEvent.objects.get(action="token.create")
    client = api(world.user(who))
    assert client.get(f"/api/audit-events/{event.pk}/").status_code == (200 if visible else 404)
    actions = [e["action"] for e in client.get("/api/audit-events/").json()["results"]]
    assert ("token.create" in actions) == visible
    exported = client.get("/api/audit-events/export/")
    assert exported.status_code == 200 and ("token.create" in exported.content.decode()) == visible


def test_audit_filters_and_csv_export(world):
    owner = world.user("owner")
    token = services.issue_token(world.team, "=cmd|' /C calc'!A0", actor=owner).token
    services.rotate_token(token, actor=owner)
    client = api(owner)
    rotated = client.get("/api/audit-events/", {"action": "token.rotate"}).json()["results"]
    assert [(e["action"], e["actor_label"], e["team"]) for e in rotated] == [("token.rotate", "alpha-owner", world.team.pk)]
    tokens = client.get("/api/audit-events/", {"action": "token.", "actor": "alpha-owner"}).json()["results"]
    assert sorted(e["action"] for e in tokens) == ["token.create", "token.rotate"]
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert client.get("/api/audit-events/", {"since": future}).json()["results"] == []

    response = client.get("/api/audit-events/export/", {"action": "token."})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:4] == ["time_utc", "actor", "team", "action"]
    assert sorted(r[3] for r in rows[1:]) == ["token.create", "token.rotate"]
    # A name that a spreadsheet would run as a formula is neutralised.
    assert all(not r[6].startswith("=") for r in rows[1:])


def test_logins_and_failed_logins_are_audited_without_the_password(world):
    user = get_user_model().objects.create_user("carol", password="a-long-password-1")
    browser = Client(REMOTE_ADDR="10.1.2.3")
    browser.post("/login/", {"username": "carol", "password": "wrong-password-9"})
    browser.post("/login/", {"username": "carol", "password": "a-long-password-1"})
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert (failed.actor_label, failed.ip, failed.details) == ("carol", "10.1.2.3", {"username": "carol"})
    login = AuditEvent.objects.filter(action="auth.login").latest("created_at")
    assert (login.actor, login.ip) == (user, "10.1.2.3")
    assert not AuditEvent.objects.filter(details__icontains="password").exists()
    assert "wrong-password-9" not in str(list(AuditEvent.objects.values()))


def test_audit_picks_up_the_request_address_for_api_writes(world):
    client = APIClient(REMOTE_ADDR="192.0.2.7")
    client.force_login(world.user("admin"))
    client.post("/api/tokens/", {"team": world.team.pk, "name": "ci"}, format="json")
    assert AuditEvent.objects.get(action="token.create").ip == "192.0.2.7"
    assert audit.record("system.test").ip is None  # outside a request there is no address


# --- prices ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", [*ROLES, "outsider"])
def test_everyone_reads_prices_only_platform_admins_edit(world, who):
    row = ModelPrice.objects.create(model="gpt-*", input_per_mtok=1, output_per_mtok=2)
    client = api(world.user(who))
    assert [p["model"] for p in client.get("/api/prices/").json()["results"]] == ["gpt-*"]
    assert client.post("/api/prices/", {"model": "x", "input_per_mtok": "1", "output_per_mtok": "1"},
                       format="json").status_code == 403
    assert client.patch(f"/api/prices/{row.pk}/", {"input_per_mtok": "0"}, format="json").status_code == 403
    assert client.delete(f"/api/prices/{row.pk}/").status_code == 403


def test_platform_admin_edits_prices(world):
    admin = api(world.user("superuser"))
    created = admin.post("/api/prices/", {"model": "gpt-4o*", "input_per_mtok": "2.5", "output_per_mtok": "10",
                                          "cached_input_per_mtok": "1.25"}, format="json")
    assert created.status_code == 201, created.content
    price_id = created.json()["id"]
    assert admin.post("/api/prices/", {"model": "gpt-4o*", "input_per_mtok": "1", "output_per_mtok": "1"},
                      format="json").status_code == 400
    changed = admin.patch(f"/api/prices/{price_id}/", {"reasoning_per_mtok": "20"}, format="json")
    assert changed.json()["reasoning_per_mtok"] == "20.000000"
    assert admin.delete(f"/api/prices/{price_id}/").status_code == 204
    assert sorted(AuditEvent.objects.filter(target_type="modelprice").values_list("action", flat=True)) == [
        "price.create", "price.delete", "price.update"]


# --- authentication --------------------------------------------------------------------------------


def test_admin_gateway_token_acts_as_platform_admin(world):
    issued = services.issue_token(world.team, "automation", is_admin=True)
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    assert [t["name"] for t in client.get("/api/teams/").json()["results"]] == ["alpha", "beta"]
    created = client.post("/api/teams/", {"name": "gamma"}, format="json")
    assert created.status_code == 201
    event = AuditEvent.objects.get(action="team.create", target_id=str(created.json()["id"]))
    assert event.actor is None and event.actor_label == f"token:{issued.plaintext[:12]}"


def test_other_credentials_are_refused(world):
    plain = services.issue_token(world.team, "plain").plaintext
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {plain}").get("/api/teams/").status_code == 403
    assert APIClient(HTTP_AUTHORIZATION="Bearer ds2-not-a-real-token-000000000").get("/api/teams/").status_code == 401
    revoked = services.issue_token(world.team, "old-admin", is_admin=True)
    services.revoke_token(revoked.token)
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {revoked.plaintext}").get("/api/teams/").status_code == 401
    fenced = services.issue_token(world.team, "fenced-admin", is_admin=True, allowed_ips=["10.0.0.0/8"])
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {fenced.plaintext}").get("/api/teams/").status_code == 403
    assert APIClient().get("/api/teams/").status_code == 401
