"""Background jobs on a real Celery worker with beat: health probes, key rotation with progress, budgets."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
from cryptography.fernet import Fernet
from django.conf import settings as django_settings

from accounts import budget_alerts, budgets
from accounts import services as account_services
from accounts import tasks as account_tasks
from accounts.models import AuditEvent
from proxy.models import UsageRecord
from routing import health, health_probe, services
from routing.keyring import key_id_for
from routing.models import Credential, HealthStatus
from tests.celery_worker import celery_worker, wait_until
from tests.conftest import make_setup

pytestmark = pytest.mark.django_db(transaction=True)

PROBE_INTERVAL = 1.0
NEW_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def beat_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """A worker running beat with a one-second probe interval, and a key ring one key ahead of ours."""
    env = {
        "DS2API_PROBE_INTERVAL_SECONDS": str(PROBE_INTERVAL),
        "DS2API_ENCRYPTION_KEYS": ",".join([NEW_KEY, *django_settings.DS2API_ENCRYPTION_KEYS]),
    }
    with django_db_blocker.unblock(), celery_worker(tmp_path_factory.mktemp("beat"), beat=True, env=env) as node:
        yield node


def status_of(credential: Credential) -> str:
    return Credential.objects.get(pk=credential.pk).health_status


def test_a_credential_invalid_at_the_provider_is_marked_and_recovers_by_itself(beat_worker, fake):
    setup = make_setup(fake.url, secrets=("sk-fake-good-0001", "sk-fake-flaky-0002"))
    good, flaky = setup.credentials
    wait_until(lambda: Credential.objects.get(pk=flaky.pk).last_checked_at, what="the first scheduled probe")

    fake.state.configure(invalid_keys=["sk-fake-flaky-0002"])
    wait_until(lambda: status_of(flaky) == HealthStatus.INVALID, timeout=30, what="the probe to see the bad key")
    assert health.read_health([flaky.pk])[flaky.pk]["status"] == HealthStatus.INVALID  # what the proxy reads
    assert status_of(good) == HealthStatus.OK
    assert Credential.objects.get(pk=flaky.pk).last_error  # the provider's reason, shown on the tile

    fake.state.configure(invalid_keys=[])
    wait_until(lambda: status_of(flaky) == HealthStatus.OK, timeout=30, what="the probe to see the key work again")
    assert health.read_health([flaky.pk])[flaky.pk]["status"] == HealthStatus.OK
    # The scheduled probe is free: it lists models and never asks for a completion.
    stats = fake.state.stats(arrivals=False)["keys"]["sk-fake-flaky-0002"]
    assert stats["requests"] >= 2 and stats["completion_tokens"] == 0
    assert {r["path"] for r in fake.state.last_requests(20)} == {"/v1/models"}


def test_disabled_credentials_are_not_probed(beat_worker, fake):
    setup = make_setup(fake.url, secrets=("sk-fake-on-000001", "sk-fake-off-00002"))
    services.save_credential(setup.provider, setup.credentials[1].name, enabled=False)
    wait_until(lambda: Credential.objects.get(pk=setup.credentials[0].pk).last_checked_at, what="a probe round")
    wait_until(lambda: fake.state.stats(arrivals=False)["keys"].get("sk-fake-on-000001", {}).get("requests", 0) >= 2,
               what="a second probe round")
    assert "sk-fake-off-00002" not in fake.state.stats(arrivals=False)["keys"]


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_probe_verdicts_per_provider_kind(fake, kind):
    setup = make_setup(fake.url, kind=kind, secrets=(f"sk-fake-{kind}-0042",))
    credential = setup.credentials[0]
    fake.state.configure(invalid_keys=[f"sk-fake-{kind}-0042"])
    assert health_probe.run_probe(credential.pk)["status"] == HealthStatus.INVALID
    assert status_of(credential) == HealthStatus.INVALID
    fake.state.configure(invalid_keys=[])
    assert health_probe.run_probe(credential.pk)["status"] == HealthStatus.OK
    assert fake.state.last_request()["method"] == "GET"  # the free models listing, in each vendor's dialect


# Faults below last until cleared (no count): the module's beat worker may probe the same key meanwhile.
def test_a_rate_limited_probe_cools_down_and_a_server_error_changes_nothing(fake):
    credential = make_setup(fake.url, secrets=("sk-fake-busy-0007",)).credentials[0]
    fake.state.add_fault("sk-fake-busy-0007", "status", status=429, retry_after=30)
    assert health_probe.run_probe(credential.pk)["status"] == HealthStatus.COOLING
    live = health.read_health([credential.pk])[credential.pk]
    assert live["status"] == HealthStatus.COOLING and 20 < live["cooldown_seconds"] <= 30

    fake.state.clear_faults()
    health.reset_health(credential.pk)
    fake.state.add_fault("sk-fake-busy-0007", "status", status=503)
    assert health_probe.run_probe(credential.pk)["status"] == HealthStatus.OK  # one flaky probe is not a verdict
    assert Credential.objects.get(pk=credential.pk).last_error


def test_a_probe_never_stores_the_secret_a_provider_echoes(fake):
    secret = "sk-fake-echoed-secret-0099"
    credential = make_setup(fake.url, secrets=(secret,)).credentials[0]
    fake.state.add_fault(secret, "status", status=401, message=f"Incorrect API key provided: {secret}")
    assert health_probe.run_probe(credential.pk)["status"] == HealthStatus.INVALID
    stored = Credential.objects.get(pk=credential.pk).last_error
    assert secret not in stored and "…0099" in stored
    assert secret not in str(health.read_health([credential.pk]))


def test_key_rotation_runs_as_a_task_with_progress(beat_worker, fake):
    provider = services.save_provider("rotating", kind="openai", base_url=fake.url + "/v1")
    for i in range(5):
        services.save_credential(provider, f"acct-{i}", secret=f"sk-fake-rotate-{i:04d}")
    old_id = Credential.objects.first().key_id
    assert old_id != key_id_for(NEW_KEY)
    redis.Redis.from_url(django_settings.REDIS_URL).delete(account_tasks.ROTATION.key)  # an earlier run's state

    assert account_tasks.start_key_rotation() is True
    progress = wait_until(lambda: (p := account_tasks.ROTATION.read()) and p["state"] in ("done", "failed") and p,
                          what="the rotation to finish")
    assert progress["state"] == "done" and progress["done"] == progress["total"] == 5
    assert set(Credential.objects.values_list("key_id", flat=True)) == {key_id_for(NEW_KEY)}
    assert AuditEvent.objects.filter(action="keys.rotate").exists()
    # Done, so a new request queues again; nothing left to re-encrypt, so it finishes at zero.
    assert account_tasks.start_key_rotation() is True
    wait_until(lambda: account_tasks.ROTATION.read()["state"] == "done" and account_tasks.ROTATION.read()["done"] == 0,
               what="the second rotation")
    redis.Redis.from_url(django_settings.REDIS_URL).delete(account_tasks.ROTATION.key)


def test_a_rotation_already_queued_is_not_queued_twice(settings):
    settings.REDIS_PREFIX = f"{settings.REDIS_PREFIX}-claim"
    account_tasks.ROTATION.update(state="running")
    assert account_tasks.start_key_rotation() is False
    account_tasks.ROTATION.update(state="done")
    assert account_tasks.ROTATION.claim() is True
    assert account_tasks.ROTATION.claim() is False
    redis.Redis.from_url(settings.REDIS_URL).delete(account_tasks.ROTATION.key)


def test_budget_warnings_once_per_period_and_period_start_marked_once(fake):
    setup = make_setup(fake.url)
    team = setup.team
    team.monthly_budget_usd = Decimal("10")
    team.save()
    issued = account_services.issue_token(team, "budgeted", budget_usd=Decimal("1"))
    UsageRecord.objects.create(token_id=issued.token.pk, team_id=team.pk, client_protocol="openai_chat",
                               status=200, cost_usd=Decimal("0.85"))
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for kind, object_id in (("token", issued.token.pk), ("team", team.pk)):
        client.delete(budgets.counter_key(kind, object_id))  # a fresh database reuses ids: rebuild from rows

    warned = budget_alerts.warn()
    assert [(w["kind"], w["id"]) for w in warned] == [("token", issued.token.pk)]  # 85% of $1; team at 8.5%
    assert budget_alerts.warn() == []
    assert AuditEvent.objects.filter(action="budget.warning").count() == 1

    assert budget_alerts.start_period()["new"] is True
    assert budget_alerts.start_period()["new"] is False
    assert AuditEvent.objects.filter(action="budget.period_start").count() == 1
