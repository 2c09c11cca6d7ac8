"""Limits shared by every replica: two gateway processes against one Redis never exceed a credential's
in-flight cap or a token's requests per minute, as measured at the fake upstream; without Redis the
gateway keeps serving with per-process limits and recovers by itself."""

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from django.conf import settings
from django.db import connection

from accounts import services as account_services
from routing import services
from tests.conftest import make_setup

KEY_A, KEY_B = "sk-fake-lim-aaa-0001", "sk-fake-lim-bbb-0002"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def second_gateway(django_db_setup):
    """Another gateway process (uvicorn) on the same test database and Redis prefix."""
    db = connection.settings_dict
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "DS2API_REDIS_PREFIX": settings.REDIS_PREFIX,
        "DS2API_ALLOW_PRIVATE_UPSTREAMS": "1",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DS2API_ENCRYPTION_KEYS": ",".join(settings.DS2API_ENCRYPTION_KEYS),
        "DS2API_USAGE_FLUSH_SECONDS": "0.05",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "ds2api_site.asgi:application", "--host", "127.0.0.1", "--port",
         str(port), "--lifespan", "on", "--log-level", "warning", "--no-access-log"],
        env=env, cwd=settings.BASE_DIR,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the second gateway did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_until_serving(url: str, token: str, model: str = "gpt-test") -> None:
    """The other process reloads its config when told over Redis; wait until it knows the new token."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        models = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {token}"}, timeout=5)
        if models.status_code == 200 and model in [m["id"] for m in models.json()["data"]]:
            return
        time.sleep(0.05)
    raise AssertionError("the second gateway never saw the new configuration")


async def _fire(urls: list[str], token: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        async def one(i: int) -> httpx.Response:
            return await client.post(
                urls[i % len(urls)] + "/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                json={"model": "gpt-test", "messages": [{"role": "user", "content": f"load {i}"}]},
            )

        return await asyncio.gather(*(one(i) for i in range(count)))


def fire(urls: list[str], token: str, count: int) -> list[httpx.Response]:
    return asyncio.run(_fire(urls, token, count))


def test_two_gateways_never_exceed_a_credentials_in_flight_cap(fake, gateway, second_gateway):
    setup = make_setup(fake.url, secrets=(KEY_A, KEY_B))
    for credential in setup.credentials:
        services.save_credential(setup.provider, credential.name, max_inflight=2)
    services.save_route("gpt-test", [services.TargetSpec(setup.provider)], queue_timeout=30)
    wait_until_serving(second_gateway, setup.token)
    fake.state.add_fault("*", "slow", delay=0.15)
    responses = fire([gateway.url, second_gateway], setup.token, 40)
    assert [r.status_code for r in responses] == [200] * 40
    keys = fake.state.stats(arrivals=False)["keys"]
    assert keys[KEY_A]["requests"] + keys[KEY_B]["requests"] == 40
    assert keys[KEY_A]["max_in_flight"] <= 2 and keys[KEY_B]["max_in_flight"] <= 2
    assert max(keys[KEY_A]["max_in_flight"], keys[KEY_B]["max_in_flight"]) == 2  # the load did fill a cap


def test_two_gateways_never_exceed_a_tokens_requests_per_minute(fake, gateway, second_gateway):
    setup = make_setup(fake.url, secrets=(KEY_A, KEY_B))
    token = account_services.issue_token(setup.team, "rpm-limited", rpm=15).plaintext
    wait_until_serving(second_gateway, token)
    wait_until_serving(gateway.url, token)
    before = fake.state.stats(arrivals=False)["total_requests"]
    responses = fire([gateway.url, second_gateway], token, 40)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 15 + [429] * 25
    limited = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert all(r.json()["error"]["type"] == "rate_limit_error" for r in limited)
    assert fake.state.stats(arrivals=False)["total_requests"] - before == 15


def test_two_gateways_share_a_teams_concurrency(fake, gateway, second_gateway):
    setup = make_setup(fake.url, secrets=(KEY_A, KEY_B), team_name="small-team")
    setup.team.max_concurrency = 3
    setup.team.save()
    services.announce_change()
    wait_until_serving(second_gateway, setup.token)
    fake.state.add_fault("*", "slow", delay=0.3)
    responses = fire([gateway.url, second_gateway], setup.token, 12)
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 9
    assert fake.state.stats(arrivals=False)["max_in_flight"] == 3


def test_without_redis_limits_are_per_process_and_recover_by_themselves(fake, gateway, caplog):
    setup = make_setup(fake.url)
    token = account_services.issue_token(setup.team, "rpm-3", rpm=3).plaintext
    limits = gateway.proxy_app.runtime.limits
    working = limits.redis_url
    limits.use_redis("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        with caplog.at_level(logging.ERROR, logger="routing.limits"):
            statuses = [fire([gateway.url], token, 1)[0].status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]  # served, and the token's limit still holds
        unreachable = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
        assert len(unreachable) == 1  # logged once, not per request
        ready = httpx.get(gateway.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["limits"].startswith("degraded")
    finally:
        limits.use_redis(working)
    deadline = time.monotonic() + 15
    while limits.degraded and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(gateway.url + "/readyz").json()["checks"]["limits"] == "ok"
    assert fire([gateway.url], setup.token, 1)[0].status_code == 200


def test_token_tpm_is_charged_with_the_real_usage_once_known(fake, gateway):
    setup = make_setup(fake.url, model="long-test")
    token = account_services.issue_token(setup.team, "tpm-limited", tpm=500).plaintext
    statuses = []
    for _ in range(6):
        response = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                              json={"model": "long-test", "messages": [{"role": "user", "content": "hi"}]})
        statuses.append(response.status_code)
    # each reply is ~200 tokens although the prompt looked tiny: after 3 the minute's 500 are spent
    assert statuses == [200, 200, 200, 429, 429, 429]


def test_credential_tpm_counts_real_usage_and_sends_the_rest_elsewhere(fake, gateway):
    setup = make_setup(fake.url, model="long-test", secrets=(KEY_A, KEY_B))
    services.save_credential(setup.provider, setup.credentials[0].name, tpm=500)
    for _ in range(10):
        response = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {setup.token}"},
                              json={"model": "long-test", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200
    # ~200 tokens per reply: the third on A spends its 500 for the minute, everything after goes to B
    keys = fake.state.stats(arrivals=False)["keys"]
    assert keys[KEY_A]["requests"] == 3 and keys[KEY_B]["requests"] == 7


def test_credential_rpm_sends_the_rest_elsewhere(fake, gateway):
    setup = make_setup(fake.url, secrets=(KEY_A, KEY_B))
    services.save_credential(setup.provider, setup.credentials[0].name, rpm=3)
    responses = [fire([gateway.url], setup.token, 1)[0] for _ in range(10)]
    assert all(r.status_code == 200 for r in responses)
    keys = fake.state.stats(arrivals=False)["keys"]
    assert keys[KEY_A]["requests"] == 3 and keys[KEY_B]["requests"] == 7
