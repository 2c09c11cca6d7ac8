"""Dashboard pages: who may open what (owner / admin / member / viewer / outsider), security headers,
CSRF, login throttling, and secrets that never appear in a page."""

import re

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from accounts import services as account_services
from accounts.models import AuditEvent, GatewayToken
from proxy.models import UsageRecord
from routing import services
from tests.factories import make_world

pytestmark = pytest.mark.django_db
ROLES = ["owner", "admin", "member", "viewer"]
SECRET = "sk-proj-Zq8v3LmN0pQrStUvWxYz1234abcd9f3a"


@pytest.fixture
def world():
    return make_world()


@pytest.fixture
def keys(world):
    provider = services.save_provider("acme", kind="openai", base_url="http://127.0.0.1:9/v1")
    credential = services.save_credential(provider, "acct-primary", secret=SECRET)
    services.save_route("gpt-test", [services.TargetSpec(provider)])
    return provider, credential


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def team_row(team_id: int, **fields) -> UsageRecord:
    values = {"client_protocol": "openai_chat", "client_model": "gpt-test", "status": 200, "input_tokens": 3,
              "output_tokens": 4, "latency_ms": 80, "team_id": team_id, **fields}
    return UsageRecord.objects.create(**values)


# --- platform pages: superusers only, 404 for everyone else -----------------------------------------


def platform_paths(provider, credential) -> list[str]:
    route = credential.provider.route_targets.first().route
    return ["/providers/", f"/providers/{provider.pk}/", f"/credentials/{credential.pk}/", "/routes/",
            "/routes/new/", f"/routes/{route.pk}/", "/routes/preview/?model=gpt-test"]


@pytest.mark.parametrize("who", [*ROLES, "outsider"])
def test_platform_pages_are_404_for_team_users(world, keys, who):
    client = signed_in(world.user(who))
    for path in platform_paths(*keys):
        assert client.get(path).status_code == 404, path
    provider, credential = keys
    assert client.post(f"/credentials/{credential.pk}/toggle/").status_code == 404
    assert client.post(f"/providers/{provider.pk}/delete/").status_code == 404
    credential.refresh_from_db()
    assert credential.enabled


def test_platform_pages_open_for_a_superuser_and_redirect_anonymous_to_sign_in(world, keys):
    admin = signed_in(world.user("superuser"))
    for path in platform_paths(*keys):
        assert admin.get(path).status_code == 200, path
    response = Client().get("/providers/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


# --- team pages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_team_members_open_their_team_pages(world, who):
    client = signed_in(world.user(who))
    team = world.team.pk
    for path in [f"/teams/{team}/", f"/teams/{team}/tokens/", f"/usage/?team={team}", f"/requests/?team={team}",
                 "/teams/", "/"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "beta" not in response.content.decode(), path  # never another team's name


def test_an_outsider_gets_404_for_every_page_of_the_team(world):
    row = team_row(world.team.pk)
    token = account_services.issue_token(world.team, "ci").token
    client = signed_in(world.user("outsider"))
    team = world.team.pk
    for path in [f"/teams/{team}/", f"/teams/{team}/tokens/", f"/usage/?team={team}", f"/requests/?team={team}",
                 f"/requests/{row.pk}/", f"/usage/?token={token.pk}", f"/audit/?team={team}",
                 f"/usage/export.csv?team={team}"]:
        assert client.get(path).status_code == 404, path
    for path in [f"/teams/{team}/tokens/", f"/teams/{team}/tokens/{token.pk}/revoke/",
                 f"/teams/{team}/invites/", "/playground/token/"]:
        response = client.post(path, {"name": "x", "team": team, "role": "member", "expires_in_hours": 1})
        assert response.status_code == 404, path
    token.refresh_from_db()
    assert token.revoked_at is None
    assert GatewayToken.objects.filter(team=world.team).count() == 1


def test_a_member_never_sees_another_teams_requests(world):
    mine, theirs = team_row(world.team.pk, client_model="mine-model"), team_row(world.other_team.pk,
                                                                                 client_model="their-model")
    html = signed_in(world.user("member")).get("/requests/").content.decode()
    assert "mine-model" in html and "their-model" not in html
    usage = signed_in(world.user("member")).get("/usage/?by=model").content.decode()
    assert "mine-model" in usage and "their-model" not in usage
    assert signed_in(world.user("member")).get(f"/requests/{theirs.pk}/").status_code == 404
    assert signed_in(world.user("member")).get(f"/requests/{mine.pk}/").status_code == 200


def test_credentials_are_platform_data(world, keys):
    _, credential = keys
    team_row(world.team.pk, credential_id=credential.pk)
    member = signed_in(world.user("owner"))
    assert member.get(f"/usage/?credential={credential.pk}").status_code == 404
    assert "acct-primary" not in member.get("/requests/").content.decode()


@pytest.mark.parametrize("who", ["viewer"])
def test_a_viewer_cannot_write(world, who):
    client = signed_in(world.user(who))
    token = account_services.issue_token(world.team, "ci").token
    team = world.team.pk
    assert client.post(f"/teams/{team}/tokens/", {"name": "mine"}).status_code == 403
    assert client.post(f"/teams/{team}/tokens/{token.pk}/revoke/").status_code == 403
    assert client.post(f"/teams/{team}/tokens/{token.pk}/rotate/", {"overlap_hours": 1}).status_code == 403
    assert client.post(f"/teams/{team}/invites/", {"role": "member", "expires_in_hours": 1}).status_code == 403
    assert client.post("/playground/token/", {"team": team}).status_code == 403
    assert client.post(f"/teams/{team}/", {"name": "renamed"}).status_code == 403
    assert client.get("/playground/").status_code == 404
    assert "Create token" not in client.get(f"/teams/{team}/tokens/").content.decode()
    token.refresh_from_db()
    assert token.revoked_at is None and GatewayToken.objects.filter(team=world.team).count() == 1


def test_members_manage_only_their_own_tokens_admins_all(world):
    owner_token = account_services.issue_token(world.team, "owner-ci", actor=world.user("owner")).token
    member = signed_in(world.user("member"))
    assert member.post(f"/teams/{world.team.pk}/tokens/{owner_token.pk}/revoke/").status_code == 403
    response = member.post(f"/teams/{world.team.pk}/tokens/", {"name": "member-ci"})
    assert response.status_code == 200
    mine = GatewayToken.objects.get(name="member-ci")
    assert member.post(f"/teams/{world.team.pk}/tokens/{mine.pk}/revoke/").status_code == 302
    admin = signed_in(world.user("admin"))
    assert admin.post(f"/teams/{world.team.pk}/tokens/{owner_token.pk}/revoke/").status_code == 302
    owner_token.refresh_from_db()
    assert owner_token.revoked_at is not None


@pytest.mark.parametrize("who,status", [("owner", 200), ("admin", 200), ("member", 404), ("viewer", 404),
                                        ("superuser", 200)])
def test_audit_log_is_for_team_admins_and_platform_admins(world, who, status):
    account_services.issue_token(world.team, "ci", actor=world.user("owner"))
    account_services.issue_token(world.other_team, "their-ci", actor=world.user("outsider"))
    response = signed_in(world.user(who)).get("/audit/")
    assert response.status_code == status
    if status == 200 and who != "superuser":
        html = response.content.decode()
        assert "token.create" in html and "their-ci" not in html


def test_audit_log_downloads_as_csv(world):
    account_services.issue_token(world.team, "=cmd|calc", actor=world.user("owner"))
    response = signed_in(world.user("owner")).get("/audit/?format=csv&action=token.")
    assert response["Content-Type"].startswith("text/csv")
    lines = response.content.decode().splitlines()
    assert lines[0].startswith("time_utc,actor,team,action")
    assert any("token.create" in line and "'=cmd|calc" in line for line in lines[1:])


def test_navigation_offers_only_what_the_role_may_open(world):
    def nav(who: str) -> list[str]:
        html = signed_in(world.user(who)).get("/").content.decode()
        return re.findall(r'<nav aria-label="main">(.*?)</nav>', html, re.S)[0]

    assert "Providers" in nav("superuser") and "Audit" in nav("superuser")
    assert "Providers" not in nav("owner") and "Audit" in nav("owner") and "Playground" in nav("owner")
    assert "Audit" not in nav("member") and "Playground" in nav("member")
    assert "Playground" not in nav("viewer") and "Usage" in nav("viewer")
    loner = get_user_model().objects.create_user("loner")
    assert signed_in(loner).get("/usage/").status_code == 200  # nothing to see, but not an error


# --- headers, CSRF, secrets ------------------------------------------------------------------------


def test_pages_send_a_strict_csp_and_deny_framing(world, keys):
    response = signed_in(world.user("superuser")).get("/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"


def all_pages(world, keys) -> list[str]:
    provider, credential = keys
    row = team_row(world.team.pk, credential_id=credential.pk, provider_id=provider.pk)
    return [*platform_paths(provider, credential), "/", f"/usage/?credential={credential.pk}",
            "/usage/?by=credential", "/requests/", f"/requests/{row.pk}/", f"/teams/{world.team.pk}/",
            f"/teams/{world.team.pk}/tokens/", "/audit/", "/playground/", "/teams/", "/login/"]


def test_no_page_has_inline_script_inline_handlers_or_inline_styles(world, keys):
    client = signed_in(world.user("superuser"))
    for path in all_pages(world, keys):
        html = client.get(path).content.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"\son[a-z]+\s*=", html), path
        assert not re.search(r"\sstyle\s*=", html), path


def test_the_masked_secret_is_the_only_form_of_the_key_in_any_page(world, keys):
    client = signed_in(world.user("superuser"))
    for path in all_pages(world, keys):
        html = client.get(path).content.decode()
        # No run of 8 or more characters of the key, in any page: only the masked last four.
        pieces = {SECRET[i:i + 8] for i in range(len(SECRET) - 7)}
        assert not any(piece in html for piece in pieces), path
    provider_page = client.get(f"/providers/{keys[0].pk}/").content.decode()
    assert "…9f3a" in provider_page


def test_forms_need_a_csrf_token(world, keys):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.user("superuser"))
    _, credential = keys
    assert client.post(f"/credentials/{credential.pk}/toggle/").status_code == 403
    page = client.get(f"/providers/{keys[0].pk}/").content.decode()
    assert page.count('name="csrfmiddlewaretoken"') >= page.count('method="post"') > 0


# --- login throttling ------------------------------------------------------------------------------


@pytest.fixture
def fresh_throttle():
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(f"{settings.REDIS_PREFIX}:login-failures:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_login_locks_after_repeated_failures_even_for_the_right_password(db, settings, fresh_throttle):
    settings.DS2API_LOGIN_MAX_FAILURES = 3
    get_user_model().objects.create_user("alice", password="correct-horse-battery")
    client = Client()
    for _ in range(2):
        assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    locked = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.content.decode()
    again = client.post("/login/", {"username": "alice", "password": "correct-horse-battery"})
    assert again.status_code == 429 and "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="auth.login_locked").exists()
    # Another address is not locked out by this one's guesses.
    other = Client(REMOTE_ADDR="10.9.8.7")
    assert other.post("/login/", {"username": "alice", "password": "correct-horse-battery"}).status_code == 302


def test_a_successful_sign_in_clears_the_failure_count(db, settings, fresh_throttle):
    settings.DS2API_LOGIN_MAX_FAILURES = 3
    get_user_model().objects.create_user("bob", password="correct-horse-battery")
    client = Client()
    for _ in range(2):
        client.post("/login/", {"username": "bob", "password": "wrong"})
    assert client.post("/login/", {"username": "bob", "password": "correct-horse-battery"}).status_code == 302
    client.logout()
    for _ in range(2):
        assert client.post("/login/", {"username": "bob", "password": "wrong"}).status_code == 200


def test_overview_shows_a_local_model_tile_to_platform_admins(world):
    from routing.models import Provider

    provider = Provider.objects.create(name="smol", kind="local", options={"model": "smollm2"})
    services.save_credential(provider, services.LOCAL_CREDENTIAL, secret="in-process")  # as save_provider does
    html = signed_in(world.user("superuser")).get("/").content.decode()
    assert 'data-local-provider="' in html and "not loaded" in html
    assert "data-local-provider" not in signed_in(world.user("owner")).get("/").content.decode()
