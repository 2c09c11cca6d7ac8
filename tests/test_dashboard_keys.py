"""Providers, keys and routes from the browser's forms: bulk paste, enable/disable, replace, delete,
"test" / "test all" against the fake upstream, the routes editor and the "who would serve X" preview."""

import pytest
from django.test import Client

from accounts.models import AuditEvent
from routing import health, services
from routing.models import Credential, HealthStatus, Provider, Route
from routing.selectors import credential_health
from tests.factories import SuperUserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin():
    client = Client()
    client.force_login(SuperUserFactory(username="root"))
    return client


@pytest.fixture
def provider(fake):
    return services.save_provider("fake-openai", kind="openai", base_url=fake.url + "/v1")


def htmx(client: Client, path: str, data: dict | None = None):
    return client.post(path, data or {}, HTTP_HX_REQUEST="true")


def test_add_a_provider_then_paste_many_keys(admin, fake):
    response = admin.post("/providers/", {"name": "acme", "kind": "openai", "base_url": fake.url + "/v1",
                                          "enabled": "on"})
    provider = Provider.objects.get(name="acme")
    assert response.status_code == 302 and response["Location"] == f"/providers/{provider.pk}/"
    pasted = "sk-first-key-000000000001\n\n# a comment\nbackup sk-second-key-00000000002\nsk-third-key-000000000003\n"
    response = admin.post(f"/providers/{provider.pk}/keys/", {"keys": pasted, "name_prefix": "acct"})
    assert response.status_code == 302
    names = dict(Credential.objects.filter(provider=provider).values_list("name", "last4"))
    assert names == {"acct-1": "0001", "backup": "0002", "acct-2": "0003"}
    # Pasting the same keys again adds nothing.
    admin.post(f"/providers/{provider.pk}/keys/", {"keys": pasted, "name_prefix": "acct"})
    assert Credential.objects.filter(provider=provider).count() == 3
    page = admin.get(f"/providers/{provider.pk}/").content.decode()
    assert "…0001" in page and "sk-first-key" not in page
    assert AuditEvent.objects.filter(action="credential.create").count() == 3


def test_a_bad_paste_names_the_line_but_never_echoes_a_key(admin, provider):
    response = admin.post(f"/providers/{provider.pk}/keys/",
                          {"keys": "sk-good-key-0000000001\nthree words sk-leaky-key-00000009", "name_prefix": "k"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "line 2" in html and "sk-leaky-key" not in html and "sk-good-key" not in html
    assert not Credential.objects.exists()  # all or nothing


def test_disable_enable_replace_and_delete_a_key(admin, provider):
    credential = services.save_credential(provider, "acct", secret="sk-old-secret-00001111")
    admin.post(f"/credentials/{credential.pk}/toggle/")
    credential.refresh_from_db()
    assert not credential.enabled
    admin.post(f"/credentials/{credential.pk}/toggle/")
    credential.refresh_from_db()
    assert credential.enabled

    page = admin.get(f"/credentials/{credential.pk}/").content.decode()
    assert 'type="password"' in page and "sk-old-secret" not in page
    response = admin.post(f"/credentials/{credential.pk}/", {"secret": "sk-new-secret-00002222", "weight": 3,
                                                             "rpm": 60, "enabled": "on"})
    assert response.status_code == 302
    credential.refresh_from_db()
    assert services.reveal_secret(credential) == "sk-new-secret-00002222"
    assert (credential.last4, credential.weight, credential.rpm) == ("2222", 3, 60)
    # Saving without a secret keeps the key.
    admin.post(f"/credentials/{credential.pk}/", {"secret": "", "weight": 1, "enabled": "on"})
    credential.refresh_from_db()
    assert services.reveal_secret(credential) == "sk-new-secret-00002222" and credential.weight == 1
    assert AuditEvent.objects.filter(action="credential.update").count() == 4  # 2 toggles, replace, save

    admin.post(f"/credentials/{credential.pk}/delete/")
    assert not Credential.objects.filter(pk=credential.pk).exists()
    assert AuditEvent.objects.filter(action="credential.delete").exists()


def test_test_button_calls_the_provider_and_shows_the_result_inline(admin, provider, fake):
    good = services.save_credential(provider, "good", secret="sk-good-00000000aaaa")
    response = htmx(admin, f"/credentials/{good.pk}/test/")
    html = response.content.decode()
    assert response.status_code == 200 and "✓ ok" in html and "HTTP 200" in html
    assert "<html" not in html  # a fragment for the inline result, not a page
    last = fake.state.last_request()
    assert last["path"] == "/v1/chat/completions" and last["headers"]["authorization"].endswith("aaaa")
    assert last["body"]["max_tokens"] == 1 or last["body"].get("max_completion_tokens") == 1


def test_test_all_marks_a_rejected_key_invalid_and_keeps_the_good_one(admin, provider, fake):
    good = services.save_credential(provider, "good", secret="sk-good-00000000aaaa")
    bad = services.save_credential(provider, "bad", secret="sk-revoked-0000bbbb")
    fake.state.configure(invalid_keys=["sk-revoked-0000bbbb"])
    html = htmx(admin, f"/providers/{provider.pk}/test/").content.decode()
    assert html.count("✓ ok") == 1 and html.count("✗ failed") == 1 and "HTTP 401" in html
    assert "sk-revoked" not in html
    states = {h["credential_id"]: h["status"] for h in credential_health([good.pk, bad.pk])}
    assert states == {good.pk: HealthStatus.OK, bad.pk: HealthStatus.INVALID}
    assert "invalid" in admin.get(f"/providers/{provider.pk}/").content.decode()


def test_a_rate_limited_probe_cools_the_key_down(admin, provider, fake):
    credential = services.save_credential(provider, "busy", secret="sk-busy-0000cccc")
    fake.state.add_fault("*", "status", status=429, retry_after=30, message="slow down")
    html = htmx(admin, f"/credentials/{credential.pk}/test/").content.decode()
    assert "HTTP 429" in html and "slow down" in html
    status = health.read_health([credential.pk])[credential.pk]
    assert status["status"] == HealthStatus.COOLING and status["cooldown_seconds"] > 0


def test_test_without_htmx_redirects_with_a_message(admin, provider):
    credential = services.save_credential(provider, "good", secret="sk-good-00000000aaaa")
    response = admin.post(f"/credentials/{credential.pk}/test/", follow=True)
    assert "Test: ok" in response.content.decode()


def test_create_and_edit_a_route_with_targets_tiers_and_fallbacks(admin, fake, provider):
    services.save_credential(provider, "k1", secret="sk-k1-0000000000001111")
    other = services.save_provider("other", kind="openai", base_url=fake.url + "/v1")
    form = {
        "model": "gpt-test", "strategy": "weighted", "priority": 0, "retry_budget": 2, "timeout": "",
        "aliases": "gpt-alias, gpt-other", "fallbacks": "gpt-backup", "enabled": "on",
        "targets-TOTAL_FORMS": 3, "targets-INITIAL_FORMS": 0, "targets-MIN_NUM_FORMS": 0,
        "targets-MAX_NUM_FORMS": 50,
        "targets-0-provider": provider.pk, "targets-0-upstream_model": "gpt-4o-mini", "targets-0-weight": 3,
        "targets-0-tier": 0,
        "targets-1-provider": other.pk, "targets-1-upstream_model": "", "targets-1-weight": 1, "targets-1-tier": 1,
        "targets-2-provider": "", "targets-2-upstream_model": "", "targets-2-weight": 1, "targets-2-tier": 0,
    }
    response = admin.post("/routes/new/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    route = Route.objects.get(model="gpt-test")
    assert (route.strategy, route.aliases, route.fallbacks) == ("weighted", ["gpt-alias", "gpt-other"], ["gpt-backup"])
    targets = list(route.targets.order_by("order").values_list("provider__name", "upstream_model", "weight", "tier"))
    assert targets == [("fake-openai", "gpt-4o-mini", 3, 0), ("other", "", 1, 1)]

    edit = admin.get(f"/routes/{route.pk}/").content.decode()
    assert 'value="gpt-4o-mini"' in edit
    form.update({"strategy": "round_robin", "targets-1-provider": "", "targets-INITIAL_FORMS": 2})
    assert admin.post(f"/routes/{route.pk}/", form).status_code == 302
    route.refresh_from_db()
    assert route.strategy == "round_robin" and route.targets.count() == 1
    assert AuditEvent.objects.filter(action="route.update").exists()


def test_a_route_needs_a_target(admin):
    response = admin.post("/routes/new/", {"model": "x", "strategy": "round_robin", "priority": 0, "retry_budget": 0,
                                           "targets-TOTAL_FORMS": 1, "targets-INITIAL_FORMS": 0,
                                           "targets-0-provider": "", "targets-0-weight": 1, "targets-0-tier": 0})
    assert response.status_code == 400 and "at least one target" in response.content.decode()
    assert not Route.objects.exists()


def test_preview_names_the_credential_that_would_serve_and_skips_unhealthy_ones(admin, provider, fake):
    first = services.save_credential(provider, "first", secret="sk-first-000000001111")
    second = services.save_credential(provider, "second", secret="sk-second-00000002222")
    services.save_route("gpt-test", [services.TargetSpec(provider, "gpt-4o-mini")])
    html = htmx_get(admin, "/routes/preview/?model=gpt-test")
    assert 'data-chosen="fake-openai/first"' in html and "gpt-4o-mini" in html
    health.set_health(first.pk, HealthStatus.COOLING, cooldown_seconds=60)
    html = htmx_get(admin, "/routes/preview/?model=gpt-test")
    assert 'data-chosen="fake-openai/second"' in html and "cooling" in html
    health.set_health(second.pk, HealthStatus.INVALID, error="bad key")
    html = htmx_get(admin, "/routes/preview/?model=gpt-test")
    assert 'data-chosen=""' in html and "no usable credential" in html
    assert "no enabled route" in htmx_get(admin, "/routes/preview/?model=nothing-here")
    assert "sk-first" not in html and "…1111" in html


def test_preview_follows_fallback_routes(admin, provider, fake):
    backup = services.save_provider("backup", kind="openai", base_url=fake.url + "/v1")
    services.save_credential(backup, "spare", secret="sk-spare-00000003333")
    services.save_route("gpt-backup", [services.TargetSpec(backup)])
    services.save_route("gpt-test", [services.TargetSpec(provider)], fallbacks=["gpt-backup"])
    html = htmx_get(admin, "/routes/preview/?model=gpt-test")
    assert 'data-chosen="backup/spare"' in html and "(fallback)" in html


def htmx_get(client: Client, path: str) -> str:
    return client.get(path, HTTP_HX_REQUEST="true").content.decode()


def test_delete_a_provider_and_a_route(admin, provider):
    services.save_credential(provider, "k", secret="sk-k-00000000000009999")
    route = services.save_route("gpt-test", [services.TargetSpec(provider)])
    admin.post(f"/routes/{route.pk}/delete/")
    assert not Route.objects.exists()
    admin.post(f"/providers/{provider.pk}/delete/")
    assert not Provider.objects.exists() and not Credential.objects.exists()
    assert set(AuditEvent.objects.values_list("action", flat=True)) >= {"route.delete", "provider.delete"}


def test_the_overview_tile_shows_headroom_from_the_providers_last_headers(fake, gateway):
    import openai

    from tests.conftest import make_setup

    setup = make_setup(fake.url, secrets=("sk-headroom-0000dddd",))
    services.save_credential(setup.provider, "acct-0", max_inflight=4)
    fake.state.set_ratelimit("*", remaining_requests=42, limit_requests=60, remaining_tokens=9000,
                             limit_tokens=10000, reset_requests=30.0, reset_tokens=30.0)
    openai.OpenAI(base_url=gateway.url + "/v1", api_key=setup.token, max_retries=0).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    client = Client()
    client.force_login(SuperUserFactory(username="root"))
    html = client.get("/").content.decode()
    tile = html[html.index(f'data-credential="{setup.credentials[0].pk}"'):]
    tile = tile[: tile.index("</article>")]
    assert "42 / 60" in tile and "9000 / 10000" in tile  # requests and tokens left of the provider's limits
    assert "/ <span data-field=\"max_inflight\">4</span>" in tile and "…dddd" in tile
