"""Management API: gateway tokens within team ceilings, shown once, rotated with overlap, revoked."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services
from accounts.models import AuditEvent, GatewayToken, Role
from accounts.tokens import token_digest
from tests.factories import make_world

pytestmark = pytest.mark.django_db
ROLES = ["owner", "admin", "member", "viewer"]


@pytest.fixture
def world():
    return make_world(allowed_models=["gpt-*", "text-embedding-3-small"], rpm=100, tpm=10_000, max_concurrency=4,
                      monthly_budget_usd=50)


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def create(client, team, **fields):
    return client.post("/api/tokens/", {"team": team.pk, "name": "ci", **fields}, format="json")


@pytest.mark.parametrize("who, status", [("owner", 201), ("admin", 201), ("member", 201), ("viewer", 403),
                                         ("outsider", 404)])
def test_who_may_create_tokens(world, who, status):
    assert create(api(world.user(who)), world.team).status_code == status
    assert GatewayToken.objects.filter(team=world.team).exists() == (status == 201)


def test_a_token_is_readable_in_full_exactly_once_and_stored_as_digest(world):
    client = api(world.user("admin"))
    created = create(client, world.team, allowed_models=["gpt-4o*"], rpm=10, budget_usd="5.00")
    assert created.status_code == 201, created.content
    body = created.json()
    plaintext = body["token"]
    assert plaintext.startswith("ds2-") and body["prefix"] == plaintext[:12]
    row = GatewayToken.objects.get(pk=body["id"])
    assert row.digest == token_digest(plaintext)
    stored = [str(v) for v in GatewayToken.objects.filter(pk=row.pk).values().first().values()]
    assert not any(plaintext in v for v in stored)
    # Never again: not in the detail, the list, another role's view, or the audit log.
    for reader in ("admin", "member", "viewer"):
        detail = api(world.user(reader)).get(f"/api/tokens/{row.pk}/")
        listing = api(world.user(reader)).get("/api/tokens/")
        assert detail.status_code == 200 and "token" not in detail.json()
        assert plaintext not in detail.content.decode() and plaintext not in listing.content.decode()
        assert "digest" not in detail.json()
    assert not any(plaintext in str(v) for v in AuditEvent.objects.values_list("details", "target_repr"))


@pytest.mark.parametrize("fields, field", [
    ({"rpm": 101}, "rpm"),
    ({"tpm": 10_001}, "tpm"),
    ({"max_concurrency": 5}, "max_concurrency"),
    ({"budget_usd": "50.01"}, "budget_usd"),
    ({"allowed_models": ["claude-3-haiku"]}, "allowed_models"),  # a route the team may not use
    ({"allowed_models": ["*"]}, "allowed_models"),  # wider than the team's models
    ({"allowed_models": ["text-embedding-*"]}, "allowed_models"),  # a glob the team's exact name does not cover
    ({"is_admin": True}, "is_admin"),  # platform rights are not a team admin's to give
    ({"allowed_ips": ["not-an-ip"]}, "allowed_ips"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
])
def test_a_team_admin_cannot_exceed_the_team_ceilings(world, fields, field):
    response = create(api(world.user("owner")), world.team, **fields)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not GatewayToken.objects.filter(team=world.team).exists()


def test_tokens_within_the_ceilings_are_accepted(world):
    response = create(api(world.user("admin")), world.team, allowed_models=["gpt-4o-mini", "gpt-4*"], rpm=100,
                      tpm=10_000, max_concurrency=4, budget_usd="50", allowed_ips=["10.0.0.0/8", "127.0.0.1"],
                      expires_at=(timezone.now() + timedelta(days=30)).isoformat())
    assert response.status_code == 201, response.content
    assert response.json()["allowed_ips"] == ["10.0.0.0/8", "127.0.0.1/32"]


def test_updates_are_held_to_the_ceilings_too(world):
    token = services.issue_token(world.team, "ci").token
    client = api(world.user("admin"))
    assert client.patch(f"/api/tokens/{token.pk}/", {"rpm": 1000}, format="json").status_code == 400
    changed = client.patch(f"/api/tokens/{token.pk}/", {"rpm": 50, "name": "ci-2"}, format="json")
    assert changed.status_code == 200 and changed.json()["rpm"] == 50
    token.refresh_from_db()
    assert (token.rpm, token.name) == (50, "ci-2")


def test_platform_admin_may_create_admin_tokens(world):
    response = create(api(world.user("superuser")), world.team, is_admin=True)
    assert response.status_code == 201 and response.json()["is_admin"] is True


@pytest.mark.parametrize("who", ROLES)
def test_every_member_lists_the_teams_tokens_by_prefix(world, who):
    issued = services.issue_token(world.team, "shared")
    body = api(world.user(who)).get("/api/tokens/", {"team": world.team.pk}).json()
    assert [(t["name"], t["prefix"], t["status"]) for t in body["results"]] == [
        ("shared", issued.plaintext[:12], "active")
    ]
    budget = api(world.user(who)).get(f"/api/tokens/{issued.token.pk}/budget/")
    assert budget.status_code == 200 and budget.json()["budget_usd"] is None


def test_outsider_never_sees_or_touches_another_teams_token(world):
    token = services.issue_token(world.team, "secret-project").token
    outsider = api(world.user("outsider"))
    assert outsider.get("/api/tokens/").json()["results"] == []
    assert outsider.get("/api/tokens/", {"team": world.team.pk}).json()["results"] == []
    for method, path in (("get", ""), ("patch", ""), ("post", "revoke/"), ("post", "rotate/"), ("get", "budget/")):
        response = getattr(outsider, method)(f"/api/tokens/{token.pk}/{path}", {}, format="json")
        assert response.status_code == 404, (method, path)
    token.refresh_from_db()
    assert token.is_active() and token.name == "secret-project"


@pytest.mark.parametrize("who, allowed", [("owner", True), ("admin", True), ("member", False), ("viewer", False)])
def test_who_may_change_someone_elses_token(world, who, allowed):
    token = services.issue_token(world.team, "ci", actor=world.user("owner")).token
    client = api(world.user(who))
    expected = 200 if allowed else 403
    assert client.patch(f"/api/tokens/{token.pk}/", {"rpm": 5}, format="json").status_code == expected
    assert client.post(f"/api/tokens/{token.pk}/rotate/", {}, format="json").status_code == (201 if allowed else 403)
    assert client.post(f"/api/tokens/{token.pk}/revoke/").status_code in ((200,) if allowed else (403,))


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_team_admins_cannot_rotate_or_change_an_admin_token(world, who):
    admin_token = services.issue_token(world.team, "automation", is_admin=True).token
    client = api(world.user(who))
    assert client.post(f"/api/tokens/{admin_token.pk}/rotate/", {}, format="json").status_code == 403
    assert client.patch(f"/api/tokens/{admin_token.pk}/", {"rpm": 1}, format="json").status_code == 403
    assert client.post(f"/api/tokens/{admin_token.pk}/revoke/").status_code == 403
    assert GatewayToken.objects.filter(is_admin=True).count() == 1
    assert api(world.user("superuser")).post(f"/api/tokens/{admin_token.pk}/rotate/", {}, format="json").status_code == 201


def test_members_manage_the_tokens_they_created(world):
    member = api(world.user("member"))
    token_id = create(member, world.team).json()["id"]
    assert member.patch(f"/api/tokens/{token_id}/", {"rpm": 5}, format="json").status_code == 200
    revoked = member.post(f"/api/tokens/{token_id}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert AuditEvent.objects.filter(action="token.revoke", target_id=str(token_id), ip="127.0.0.1").exists()


def test_rotation_issues_a_new_value_and_lets_the_old_one_expire_after_the_overlap(world):
    issued = services.issue_token(world.team, "deploy", rpm=20, allowed_models=["gpt-*"])
    client = api(world.user("admin"))
    before = timezone.now()
    rotated = client.post(f"/api/tokens/{issued.token.pk}/rotate/", {"overlap_seconds": 600}, format="json")
    assert rotated.status_code == 201, rotated.content
    body = rotated.json()
    assert body["token"] != issued.plaintext and body["name"] == "deploy"
    assert (body["rpm"], body["allowed_models"]) == (20, ["gpt-*"])
    old = GatewayToken.objects.get(pk=issued.token.pk)
    assert old.is_active() and old.name != "deploy"
    assert before + timedelta(seconds=590) < old.expires_at <= timezone.now() + timedelta(seconds=600)
    assert AuditEvent.objects.filter(action="token.rotate", target_id=str(old.pk)).exists()
    # Rotating a revoked token is refused.
    services.revoke_token(old)
    assert client.post(f"/api/tokens/{old.pk}/rotate/", {}, format="json").status_code == 400


def test_active_filter(world):
    services.issue_token(world.team, "live")
    services.revoke_token(services.issue_token(world.team, "dead").token)
    client = api(world.user("viewer"))
    assert [t["name"] for t in client.get("/api/tokens/", {"active": "true"}).json()["results"]] == ["live"]
    assert [t["name"] for t in client.get("/api/tokens/", {"active": "false"}).json()["results"]] == ["dead"]


def test_member_cannot_escalate_through_the_token_team_field(world):
    # A member of alpha who is owner of nothing else cannot mint a token for beta by naming it.
    response = create(api(world.user("member")), world.other_team)
    assert response.status_code == 404
    assert world.team.memberships.get(role=Role.MEMBER).user == world.user("member")
