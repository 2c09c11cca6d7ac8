"""Management API: teams, memberships and invites, for owner / admin / member / viewer / outsider."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import invites
from accounts.models import AuditEvent, Invite, Membership, Role
from accounts.tokens import token_digest
from tests.factories import UserFactory, make_world

pytestmark = pytest.mark.django_db
ROLES = ["owner", "admin", "member", "viewer"]


@pytest.fixture
def world():
    return make_world(allowed_models=["gpt-*"], rpm=100)


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


# --- teams -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_team_members_read_their_team_with_their_role(world, who):
    response = api(world.user(who)).get(f"/api/teams/{world.team.pk}/")
    assert response.status_code == 200
    assert response.json()["name"] == "alpha" and response.json()["role"] == who
    listed = api(world.user(who)).get("/api/teams/").json()
    assert [t["name"] for t in listed["results"]] == ["alpha"]


def test_outsider_gets_404_for_a_team_and_never_lists_it(world):
    outsider = api(world.user("outsider"))
    assert outsider.get(f"/api/teams/{world.team.pk}/").status_code == 404
    assert outsider.get(f"/api/teams/{world.team.pk}/budget/").status_code == 404
    assert outsider.patch(f"/api/teams/{world.team.pk}/", {"rpm": 1}, format="json").status_code == 404
    assert outsider.delete(f"/api/teams/{world.team.pk}/").status_code == 404
    assert [t["name"] for t in outsider.get("/api/teams/").json()["results"]] == ["beta"]


@pytest.mark.parametrize("who", ROLES)
def test_only_platform_admins_set_ceilings_or_create_and_delete_teams(world, who):
    client = api(world.user(who))
    assert client.patch(f"/api/teams/{world.team.pk}/", {"rpm": 100000}, format="json").status_code == 403
    assert client.post("/api/teams/", {"name": "new"}, format="json").status_code == 403
    assert client.delete(f"/api/teams/{world.team.pk}/").status_code == 403
    world.team.refresh_from_db()
    assert world.team.rpm == 100


def test_platform_admin_manages_teams_and_every_change_is_audited(world):
    admin = api(world.user("superuser"))
    created = admin.post("/api/teams/", {"name": "gamma", "allowed_models": ["claude-*"],
                                         "monthly_budget_usd": "50.00"}, format="json")
    assert created.status_code == 201, created.content
    team_id = created.json()["id"]
    changed = admin.patch(f"/api/teams/{team_id}/", {"rpm": 10, "tpm": 1000}, format="json")
    assert changed.status_code == 200 and changed.json()["rpm"] == 10
    assert admin.post("/api/teams/", {"name": "gamma"}, format="json").status_code == 400
    assert admin.delete(f"/api/teams/{team_id}/").status_code == 204
    actions = list(AuditEvent.objects.filter(target_type="team", target_id=str(team_id)).values_list("action", flat=True))
    assert sorted(actions) == ["team.create", "team.delete", "team.update"]


def test_team_budget_status(world):
    world.team.monthly_budget_usd = 10
    world.team.save()
    body = api(world.user("viewer")).get(f"/api/teams/{world.team.pk}/budget/").json()
    assert body["budget_usd"] == "10.0000" and body["spent_usd"] == "0.00000000"
    assert body["warning"] is False and body["exceeded"] is False


# --- memberships -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_members_list_their_teams_members(world, who):
    body = api(world.user(who)).get("/api/memberships/", {"team": world.team.pk}).json()
    assert sorted(m["username"] for m in body["results"]) == [f"alpha-{r}" for r in sorted(ROLES)]


def test_outsider_sees_no_membership_of_another_team(world):
    outsider = api(world.user("outsider"))
    body = outsider.get("/api/memberships/", {"team": world.team.pk}).json()
    assert body["results"] == []
    someone = Membership.objects.get(team=world.team, role=Role.MEMBER)
    assert outsider.get(f"/api/memberships/{someone.pk}/").status_code == 404
    assert outsider.patch(f"/api/memberships/{someone.pk}/", {"role": "owner"}, format="json").status_code == 404
    assert outsider.delete(f"/api/memberships/{someone.pk}/").status_code == 404
    newcomer = UserFactory(username="newcomer")
    added = outsider.post("/api/memberships/", {"team": world.team.pk, "username": newcomer.username}, format="json")
    assert added.status_code == 404


@pytest.mark.parametrize("who, allowed", [("owner", True), ("admin", False), ("member", False), ("viewer", False)])
def test_only_owners_add_members_and_change_roles(world, who, allowed):
    client = api(world.user(who))
    newcomer = UserFactory(username="newcomer")
    added = client.post("/api/memberships/", {"team": world.team.pk, "username": "newcomer", "role": "viewer"},
                        format="json")
    assert added.status_code == (201 if allowed else 403)
    member = Membership.objects.get(team=world.team, role=Role.MEMBER)
    changed = client.patch(f"/api/memberships/{member.pk}/", {"role": "admin"}, format="json")
    assert changed.status_code == (200 if allowed else 403)
    member.refresh_from_db()
    assert member.role == ("admin" if allowed else "member")
    assert Membership.objects.filter(user=newcomer, team=world.team).exists() == allowed


def test_anyone_may_leave_but_only_owners_remove_others(world):
    viewer_membership = Membership.objects.get(team=world.team, role=Role.VIEWER)
    member_membership = Membership.objects.get(team=world.team, role=Role.MEMBER)
    viewer = api(world.user("viewer"))
    assert viewer.delete(f"/api/memberships/{member_membership.pk}/").status_code == 403
    assert viewer.delete(f"/api/memberships/{viewer_membership.pk}/").status_code == 204
    assert api(world.user("owner")).delete(f"/api/memberships/{member_membership.pk}/").status_code == 204
    assert set(Membership.objects.filter(team=world.team).values_list("role", flat=True)) == {"owner", "admin"}


def test_the_last_owner_cannot_leave_or_be_demoted(world):
    owner = api(world.user("owner"))
    mine = Membership.objects.get(team=world.team, role=Role.OWNER)
    assert owner.patch(f"/api/memberships/{mine.pk}/", {"role": "viewer"}, format="json").status_code == 400
    assert owner.delete(f"/api/memberships/{mine.pk}/").status_code == 400
    admin = Membership.objects.get(team=world.team, role=Role.ADMIN)
    assert owner.patch(f"/api/memberships/{admin.pk}/", {"role": "owner"}, format="json").status_code == 200
    assert owner.delete(f"/api/memberships/{mine.pk}/").status_code == 204


def test_a_user_in_several_teams_sees_both(world):
    both = world.user("member")
    Membership.objects.create(user=both, team=world.other_team, role=Role.VIEWER)
    body = api(both).get("/api/teams/").json()
    assert {(t["name"], t["role"]) for t in body["results"]} == {("alpha", "member"), ("beta", "viewer")}


# --- invites ---------------------------------------------------------------------------------------


def _invite(client, team, **fields):
    return client.post("/api/invites/", {"team": team.pk, **fields}, format="json")


@pytest.mark.parametrize("who, status", [("owner", 201), ("admin", 403), ("member", 403), ("viewer", 403),
                                         ("outsider", 404)])
def test_only_owners_create_invites(world, who, status):
    assert _invite(api(world.user(who)), world.team, role="member").status_code == status


def test_invite_link_is_shown_once_stored_as_digest_and_works_once(world):
    owner = api(world.user("owner"))
    created = _invite(owner, world.team, role="admin", note="for carol", expires_in_hours=2)
    assert created.status_code == 201
    body = created.json()
    code = body["code"]
    assert body["url"].endswith(f"/invite/{code}/") and body["status"] == "open"
    invite = Invite.objects.get(pk=body["id"])
    assert invite.digest == token_digest(code)
    assert not any(code in str(v) for v in Invite.objects.filter(pk=invite.pk).values().first().values())
    assert "code" not in owner.get(f"/api/invites/{invite.pk}/").json()
    assert not any(code in str(v) for v in AuditEvent.objects.values_list("details", "target_repr"))

    carol = UserFactory(username="carol")
    joined = api(carol).post("/api/invites/accept/", {"code": code}, format="json")
    assert joined.status_code == 200 and joined.json()["role"] == "admin"
    assert Membership.objects.get(user=carol, team=world.team).role == Role.ADMIN
    assert owner.get(f"/api/invites/{invite.pk}/").json()["status"] == "accepted"

    dave = UserFactory(username="dave")
    again = api(dave).post("/api/invites/accept/", {"code": code}, format="json")
    assert again.status_code == 400
    assert not Membership.objects.filter(user=dave).exists()


def test_expired_revoked_and_unknown_invites_are_refused(world):
    expired = invites.create_invite(world.team, role=Role.MEMBER)
    Invite.objects.filter(pk=expired.invite.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked = invites.create_invite(world.team)
    owner = api(world.user("owner"))
    assert owner.delete(f"/api/invites/{revoked.invite.pk}/").status_code == 204
    joiner = api(UserFactory(username="joiner"))
    for code in (expired.code, revoked.code, "inv-not-a-real-code"):
        assert joiner.post("/api/invites/accept/", {"code": code}, format="json").status_code == 400


@pytest.mark.parametrize("who, visible", [("owner", True), ("admin", True), ("member", False), ("viewer", False),
                                          ("outsider", False)])
def test_invites_are_visible_to_team_admins_only(world, who, visible):
    issued = invites.create_invite(world.team)
    client = api(world.user(who))
    assert client.get(f"/api/invites/{issued.invite.pk}/").status_code == (200 if visible else 404)
    assert len(client.get("/api/invites/").json()["results"]) == (1 if visible else 0)


@pytest.mark.parametrize("who, status", [("admin", 403), ("member", 404), ("viewer", 404), ("outsider", 404)])
def test_only_owners_revoke_invites(world, who, status):
    issued = invites.create_invite(world.team)
    assert api(world.user(who)).delete(f"/api/invites/{issued.invite.pk}/").status_code == status
    issued.invite.refresh_from_db()
    assert issued.invite.revoked_at is None
