"""Shared fixtures: the in-repo fake upstream, the gateway served on a real socket, and ready-made configs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model

from accounts import services as account_services
from accounts.models import Team
from routing import services
from routing.models import Credential, Provider
from tests.fakes.upstream import FakeUpstream
from tests.servers import ServerThread


@pytest.fixture(autouse=True)
def _test_settings(settings):
    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = True  # the fake upstream listens on 127.0.0.1
    settings.DS2API_USAGE_FLUSH_SECONDS = 0.05
    # The session-wide gateway sees every test's bad tokens from 127.0.0.1; test_security sets its own limit.
    settings.DS2API_AUTH_MAX_FAILURES = 10_000


@pytest.fixture(autouse=True)
def _fresh_routing_state(settings):
    """Shared limits, credential health and monthly spend live in Redis under the test prefix, keyed by
    database ids that restart with every test database: each test starts from none."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = [key for kind in ("rt", "spend") for key in client.scan_iter(f"{settings.REDIS_PREFIX}:{kind}:*", count=1000)]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def fake_upstream():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(fake_upstream):
    fake_upstream.state.reset()
    return fake_upstream


@pytest.fixture(scope="session")
def _gateway_server():
    from django.db import connections

    from ds2api_site.asgi import application, proxy_app

    # The server's worker threads open their own connections; close them after each use so the test
    # database can be dropped at the end of the session.
    connections.settings["default"]["CONN_MAX_AGE"] = 0
    with ServerThread(application, lifespan="on") as server:
        server.proxy_app = proxy_app
        yield server


@pytest.fixture
def gateway(_gateway_server, transactional_db):
    """The full ASGI application on a real socket; its config snapshot reloads for every test."""
    _gateway_server.proxy_app.runtime.config._generation = -2
    yield _gateway_server
    # Let this test's usage rows reach its own tables before the database is flushed for the next test.
    usage = _gateway_server.proxy_app.runtime.usage
    deadline = time.monotonic() + 5
    while (usage.depth or usage._flushing.locked()) and time.monotonic() < deadline:
        time.sleep(0.02)


@dataclass
class Setup:
    team: Team
    token: str
    provider: Provider
    credentials: list[Credential]


def make_setup(
    fake_url: str,
    *,
    kind: str = "openai",
    model: str = "gpt-test",
    upstream_model: str = "",
    secrets: tuple[str, ...] = ("sk-fake-key-0001",),
    team_name: str = "qa",
    provider_name: str | None = None,
) -> Setup:
    base_url = {"openai": fake_url + "/v1", "anthropic": fake_url, "gemini": fake_url}[kind]
    provider = services.save_provider(provider_name or f"fake-{kind}", kind=kind, base_url=base_url)
    credentials = [services.save_credential(provider, f"acct-{i}", secret=s) for i, s in enumerate(secrets)]
    services.save_route(model, [services.TargetSpec(provider, upstream_model)])
    team = Team.objects.filter(name=team_name).first() or account_services.create_team(team_name)
    issued = account_services.issue_token(team, f"token-{time.monotonic_ns()}")
    return Setup(team, issued.plaintext, provider, credentials)


@pytest.fixture
def setup_openai(fake, gateway) -> Setup:
    return make_setup(fake.url)


def wait_for_usage_rows(count: int, timeout: float = 5.0):
    from proxy.models import UsageRecord

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(UsageRecord.objects.order_by("id"))
        if len(rows) >= count:
            return rows
        time.sleep(0.02)
    return list(UsageRecord.objects.order_by("id"))


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("root-admin", "", "correct-horse-battery")
