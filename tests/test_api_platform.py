"""Management API: providers, credentials (secret write-only) and routes — platform configuration."""

import pytest
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from routing import services
from routing.keyring import get_keyring
from routing.models import Credential, Provider, Route
from tests.factories import make_world

pytestmark = pytest.mark.django_db
ROLES = ["owner", "admin", "member", "viewer"]
SECRET = "sk-live-abcdefghijklmnop-WXYZ"


@pytest.fixture
def world():
    world = make_world(allowed_models=["gpt-*"])
    world.other_team.allowed_models = ["claude-*"]
    world.other_team.save()
    provider = services.save_provider("openai", kind="openai", base_url="http://127.0.0.1:9/v1")
    world.provider = provider
    world.credential = services.save_credential(provider, "main", secret=SECRET)
    world.route = services.save_route("gpt-test", [services.TargetSpec(provider)])
    world.other_route = services.save_route("o1-secret", [services.TargetSpec(provider)])
    return world


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.mark.parametrize("who", [*ROLES, "outsider"])
def test_providers_and_credentials_are_for_platform_admins_only(world, who):
    client = api(world.user(who))
    for kind, row in (("providers", world.provider), ("credentials", world.credential)):
        assert client.get(f"/api/{kind}/").json()["results"] == []
        assert client.get(f"/api/{kind}/{row.pk}/").status_code == 404
        assert client.patch(f"/api/{kind}/{row.pk}/", {"name": "x"}, format="json").status_code == 404
        assert client.delete(f"/api/{kind}/{row.pk}/").status_code == 404
    assert client.post("/api/providers/", {"name": "p2", "kind": "openai", "base_url": "http://127.0.0.1:9"},
                       format="json").status_code == 403
    assert client.post("/api/credentials/", {"provider": world.provider.pk, "name": "k2", "secret": "sk-123456"},
                       format="json").status_code == 403
    assert Provider.objects.count() == 1 and Credential.objects.count() == 1


def test_platform_admin_manages_providers(world):
    admin = api(world.user("superuser"))
    created = admin.post("/api/providers/", {"name": "claude", "kind": "anthropic", "base_url": "http://127.0.0.1:9",
                                             "extra_headers": {"anthropic-beta": "x"}}, format="json")
    assert created.status_code == 201, created.content
    pid = created.json()["id"]
    assert admin.post("/api/providers/", {"name": "claude", "kind": "anthropic"}, format="json").status_code == 400
    bad = admin.post("/api/providers/", {"name": "evil", "kind": "openai", "base_url": "http://169.254.169.254/"},
                     format="json")
    assert bad.status_code == 400 and "metadata" in str(bad.json())
    smuggle = admin.post("/api/providers/", {"name": "p3", "kind": "openai", "base_url": "http://127.0.0.1:9",
                                             "extra_headers": {"x-a": "1\r\nHost: evil"}}, format="json")
    assert smuggle.status_code == 400
    renamed = admin.patch(f"/api/providers/{pid}/", {"name": "anthropic-main", "read_timeout": 30}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "anthropic-main"
    assert admin.delete(f"/api/providers/{pid}/").status_code == 204
    actions = AuditEvent.objects.filter(target_type="provider", target_id=str(pid)).values_list("action", flat=True)
    assert sorted(actions) == ["provider.create", "provider.delete", "provider.update"]


def test_credential_secret_is_write_only_and_masked(world):
    admin = api(world.user("superuser"))
    created = admin.post("/api/credentials/", {"provider": world.provider.pk, "name": "backup",
                                               "secret": "sk-new-secret-value-9876", "rpm": 60}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["last4"], body["masked"]) == ("9876", "…9876") and "secret" not in body
    cid = body["id"]
    for response in (admin.get(f"/api/credentials/{cid}/"), admin.get("/api/credentials/")):
        assert "sk-new-secret-value" not in response.content.decode() and SECRET[:-4] not in response.content.decode()
    row = Credential.objects.get(pk=cid)
    assert "sk-new-secret-value" not in row.secret_ciphertext
    assert get_keyring().decrypt(row.key_id, row.secret_ciphertext) == "sk-new-secret-value-9876"
    assert admin.post("/api/credentials/", {"provider": world.provider.pk, "name": "nokey"},
                      format="json").status_code == 400

    replaced = admin.patch(f"/api/credentials/{cid}/", {"secret": "sk-replacement-1111", "enabled": False},
                           format="json")
    assert replaced.status_code == 200 and replaced.json()["last4"] == "1111" and not replaced.json()["enabled"]
    update = AuditEvent.objects.get(action="credential.update", target_id=str(cid))
    assert update.details["secret_changed"] is True and "sk-replacement" not in str(update.details)
    assert admin.delete(f"/api/credentials/{cid}/").status_code == 204
    assert not Credential.objects.filter(pk=cid).exists()


@pytest.mark.parametrize("who", ROLES)
def test_team_members_read_the_routes_their_team_may_use(world, who):
    client = api(world.user(who))
    assert [r["model"] for r in client.get("/api/routes/").json()["results"]] == ["gpt-test"]
    assert client.get(f"/api/routes/{world.route.pk}/").json()["targets"] == [
        {"provider": world.provider.pk, "upstream_model": "", "weight": 1}
    ]
    assert client.get(f"/api/routes/{world.other_route.pk}/").status_code == 404
    assert client.patch(f"/api/routes/{world.route.pk}/", {"priority": 5}, format="json").status_code == 403
    assert client.delete(f"/api/routes/{world.route.pk}/").status_code == 403
    assert client.post("/api/routes/", {"model": "gpt-new", "targets": [{"provider": world.provider.pk}]},
                       format="json").status_code == 403


def test_outsider_sees_no_route_of_another_team(world):
    outsider = api(world.user("outsider"))
    assert outsider.get("/api/routes/").json()["results"] == []
    assert outsider.get(f"/api/routes/{world.route.pk}/").status_code == 404
    assert outsider.patch(f"/api/routes/{world.route.pk}/", {"priority": 5}, format="json").status_code == 404


def test_platform_admin_manages_routes(world):
    admin = api(world.user("superuser"))
    created = admin.post("/api/routes/", {"model": "gpt-4o", "strategy": "weighted", "targets": [
        {"provider": world.provider.pk, "upstream_model": "gpt-4o-2024", "weight": 3}]}, format="json")
    assert created.status_code == 201, created.content
    rid = created.json()["id"]
    assert admin.post("/api/routes/", {"model": "gpt-4o", "targets": [{"provider": world.provider.pk}]},
                      format="json").status_code == 400
    assert admin.post("/api/routes/", {"model": "gpt-5", "targets": []}, format="json").status_code == 400
    changed = admin.patch(f"/api/routes/{rid}/", {"model": "gpt-4o-latest", "priority": 2}, format="json")
    assert changed.status_code == 200 and changed.json()["targets"][0]["upstream_model"] == "gpt-4o-2024"
    retargeted = admin.patch(f"/api/routes/{rid}/", {"targets": [{"provider": world.provider.pk}]}, format="json")
    assert retargeted.json()["targets"] == [{"provider": world.provider.pk, "upstream_model": "", "weight": 1}]
    assert Route.objects.get(pk=rid).model == "gpt-4o-latest"
    assert admin.delete(f"/api/routes/{rid}/").status_code == 204
    assert set(AuditEvent.objects.filter(target_type="route", target_id=str(rid)).values_list("action", flat=True)) \
        == {"route.create", "route.update", "route.delete"}
