"""Failover, cooldowns, invalid keys and routing strategies, seen from a client and the fake upstream."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from accounts import services as account_services
from routing import services
from routing.config_events import announce_change
from routing.models import Credential, RouteTarget
from routing.selectors import credential_health
from tests.conftest import make_setup

KEY_A, KEY_B = "sk-fake-aaaa-0001", "sk-fake-bbbb-0002"


def client(gateway, token: str, **headers) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0, default_headers=headers)


def ask(gateway, token: str, model: str = "gpt-test", text: str = "hi there", **headers) -> str:
    reply = client(gateway, token, **headers).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content


def requests_per_key(fake) -> dict[str, int]:
    return {key: s["requests"] for key, s in fake.state.stats(arrivals=False)["keys"].items()}


def pool(fake, strategy: str = "round_robin", weights: tuple[int, int] = (1, 1), **route):
    setup = make_setup(fake.url, secrets=(KEY_A, KEY_B))
    for credential, weight in zip(setup.credentials, weights, strict=True):
        services.save_credential(setup.provider, credential.name, weight=weight)
    services.save_route("gpt-test", [services.TargetSpec(setup.provider)], strategy=strategy, **route)
    return setup


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def health_of(credential: Credential) -> dict:
    return credential_health([credential.id])[0]


def test_429_with_retry_after_is_skipped_until_then_and_clients_see_no_error(fake, gateway):
    setup = pool(fake)
    fake.state.add_fault(KEY_A, "status", status=429, retry_after=2)
    replies = [ask(gateway, setup.token, text=f"n{i}") for i in range(10)]
    assert replies == [f"echo: n{i}" for i in range(10)]
    # A was tried once, answered 429, and was then left alone while it cooled down.
    assert requests_per_key(fake) == {KEY_A: 1, KEY_B: 10}
    a = setup.credentials[0]
    health = health_of(a)
    assert health["status"] == "cooling" and 0 < health["cooldown_seconds"] <= 2
    assert "429" in health["last_error"]
    assert health_of(setup.credentials[1])["status"] == "ok"
    # mirrored to the credential row off the request path
    row = wait_until(lambda: Credential.objects.filter(id=a.id, health_status="cooling").first())
    assert row is not None and row.cooldown_until is not None and "429" in row.last_error

    fake.state.clear_faults()
    assert wait_until(lambda: health_of(a)["status"] == "ok", timeout=5)
    for i in range(6):
        ask(gateway, setup.token, text=f"again {i}")
    assert requests_per_key(fake)[KEY_A] >= 3  # back in the rotation once its retry-after passed


def test_401_marks_the_credential_invalid_until_its_key_is_replaced(fake, gateway):
    setup = pool(fake)
    fake.state.configure(invalid_keys=[KEY_A])
    for i in range(8):
        assert ask(gateway, setup.token, text=f"k{i}") == f"echo: k{i}"
    assert requests_per_key(fake) == {KEY_A: 1, KEY_B: 8}
    a = setup.credentials[0]
    assert health_of(a)["status"] == "invalid"
    assert wait_until(lambda: Credential.objects.get(id=a.id).health_status == "invalid")
    # invalid is not a cooldown: time does not heal it
    assert health_of(a)["cooldown_until"] is None

    fake.state.configure(invalid_keys=[])
    services.save_credential(setup.provider, a.name, secret="sk-fake-aaaa-0003")  # an admin fixes the key
    assert health_of(a)["status"] == "ok"
    for i in range(4):
        ask(gateway, setup.token, text=f"fixed {i}")
    assert requests_per_key(fake).get("sk-fake-aaaa-0003", 0) >= 1


def test_every_credential_refused_reaches_the_client_as_a_gateway_error(fake, gateway):
    setup = pool(fake)
    fake.state.configure(invalid_keys=[KEY_A, KEY_B])
    with pytest.raises(openai.APIStatusError) as caught:
        ask(gateway, setup.token)
    assert caught.value.status_code == 502  # never the provider's 401: the client's own token is fine
    with pytest.raises(openai.APIStatusError) as caught:
        ask(gateway, setup.token)
    assert caught.value.status_code == 503 and "invalid" in caught.value.message
    assert requests_per_key(fake) == {KEY_A: 1, KEY_B: 1}


def test_headroom_sends_traffic_away_from_a_credential_with_few_remaining_requests(fake, gateway):
    setup = pool(fake, strategy="headroom")
    fake.state.set_ratelimit(KEY_A, remaining_requests=3, limit_requests=1000, reset_requests=120)
    for i in range(20):
        ask(gateway, setup.token, text=f"h{i}")
    per_key = requests_per_key(fake)
    # A is tried once (nothing known yet), then its own headers say it is nearly spent.
    assert per_key[KEY_A] <= 2 and per_key[KEY_B] >= 18
    health = health_of(setup.credentials[0])
    assert health["remaining_requests"] == 3 and health["limit_requests"] == 1000


def test_a_provider_reporting_zero_remaining_is_skipped_until_its_reset(fake, gateway):
    setup = pool(fake)
    fake.state.set_ratelimit(KEY_A, remaining_requests=0, reset_requests=120)
    for i in range(8):
        ask(gateway, setup.token, text=f"z{i}")
    assert requests_per_key(fake)[KEY_A] == 1


def test_round_robin_spreads_evenly(fake, gateway):
    setup = pool(fake, strategy="round_robin")
    for i in range(10):
        ask(gateway, setup.token, text=f"r{i}")
    assert requests_per_key(fake) == {KEY_A: 5, KEY_B: 5}


def test_weighted_follows_the_weights(fake, gateway):
    setup = pool(fake, strategy="weighted", weights=(3, 1))
    for i in range(12):
        ask(gateway, setup.token, text=f"w{i}")
    assert requests_per_key(fake) == {KEY_A: 9, KEY_B: 3}


def test_latency_prefers_the_faster_credential(fake, gateway):
    setup = pool(fake, strategy="latency")
    fake.state.add_fault(KEY_A, "slow", delay=0.2)
    for i in range(12):
        ask(gateway, setup.token, text=f"l{i}")
    per_key = requests_per_key(fake)
    assert per_key.get(KEY_A, 0) <= 1 and per_key[KEY_B] >= 11


def test_least_inflight_avoids_the_credential_holding_requests(fake, gateway):
    setup = pool(fake, strategy="least_inflight")
    fake.state.add_fault(KEY_A, "slow", delay=0.4)
    with ThreadPoolExecutor(4) as executor:
        list(executor.map(lambda i: ask(gateway, setup.token, text=f"q{i}"), range(24)))
    per_key = requests_per_key(fake)
    # round-robin would give A half (12); with A holding each request 0.4 s, B takes most.
    assert per_key[KEY_A] <= 6 and per_key[KEY_B] >= 18


def test_tiers_prefer_the_first_tier_and_overflow_to_the_next(fake, gateway):
    setup = make_setup(fake.url, secrets=(KEY_A,))
    backup = services.save_provider("fake-backup", kind="openai", base_url=fake.url + "/v1")
    services.save_credential(backup, "backup", secret=KEY_B)
    services.save_route("gpt-test", [services.TargetSpec(setup.provider), services.TargetSpec(backup)])
    RouteTarget.objects.filter(route__model="gpt-test", provider=backup).update(tier=1)
    announce_change()
    for i in range(4):
        ask(gateway, setup.token, text=f"t{i}")
    assert requests_per_key(fake) == {KEY_A: 4}
    fake.state.add_fault(KEY_A, "status", status=429, retry_after=30)
    for i in range(4):
        ask(gateway, setup.token, text=f"u{i}")
    assert requests_per_key(fake) == {KEY_A: 5, KEY_B: 4}


def test_fallback_route_serves_when_the_route_cannot(fake, gateway):
    setup = make_setup(fake.url, secrets=(KEY_A,))
    backup = services.save_provider("fake-backup", kind="openai", base_url=fake.url + "/v1")
    services.save_credential(backup, "backup", secret=KEY_B)
    services.save_route("gpt-backup", [services.TargetSpec(backup, "gpt-backup-upstream")])
    services.save_route("gpt-test", [services.TargetSpec(setup.provider)], fallbacks=["gpt-backup"])
    fake.state.add_fault(KEY_A, "status", status=503)
    response = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {setup.token}"},
                          json={"model": "gpt-test", "messages": [{"role": "user", "content": "fall back"}]})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: fall back"
    assert response.json()["model"] == "gpt-test"  # the client sees the model it asked for
    assert response.headers["x-ds2-route"] == "gpt-backup" and response.headers["x-ds2-provider"] == "fake-backup"
    assert fake.state.last_request()["body"]["model"] == "gpt-backup-upstream"


def test_alias_resolves_to_its_route(fake, gateway):
    setup = make_setup(fake.url, secrets=(KEY_A,))
    services.save_route("gpt-test", [services.TargetSpec(setup.provider)], aliases=["my-team-model"])
    assert ask(gateway, setup.token, model="my-team-model", text="via alias") == "echo: via alias"


def test_admin_token_pins_a_credential_and_others_may_not(fake, gateway):
    setup = pool(fake)
    admin = account_services.issue_token(setup.team, "admin-token", is_admin=True).plaintext
    for i in range(5):
        ask(gateway, admin, text=f"p{i}", **{"X-Ds2-Target-Account": "acct-1"})
    assert requests_per_key(fake) == {KEY_B: 5}
    ask(gateway, admin, text="by id", **{"X-Ds2-Target-Account": str(setup.credentials[0].id)})
    assert requests_per_key(fake) == {KEY_A: 1, KEY_B: 5}

    with pytest.raises(openai.PermissionDeniedError) as caught:
        ask(gateway, setup.token, **{"X-Ds2-Target-Account": "acct-1"})
    assert "admin" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        ask(gateway, admin, **{"X-Ds2-Target-Account": "no-such-key"})


def test_pinning_an_invalid_credential_retests_it(fake, gateway):
    setup = pool(fake)
    admin = account_services.issue_token(setup.team, "admin-token", is_admin=True).plaintext
    fake.state.configure(invalid_keys=[KEY_A])
    ask(gateway, setup.token)
    ask(gateway, setup.token)
    assert health_of(setup.credentials[0])["status"] == "invalid"
    fake.state.configure(invalid_keys=[])  # the provider account was fixed on its side
    assert ask(gateway, admin, text="retest", **{"X-Ds2-Target-Account": "acct-0"}) == "echo: retest"
    # The success is settled with the next Redis call (or a few ms later), not before the reply is sent.
    assert wait_until(lambda: health_of(setup.credentials[0])["status"] == "ok")


def test_stream_failing_before_the_first_byte_is_retried(fake, gateway):
    setup = pool(fake)
    fake.state.add_fault(KEY_A, "reset")
    for i in range(3):
        stream = client(gateway, setup.token).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": f"s{i} ok"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == f"echo: s{i} ok"


def test_stream_failing_after_the_first_byte_ends_with_an_error_event(fake, gateway):
    setup = pool(fake)
    fake.state.add_fault("*", "cut", after=3)
    stream = client(gateway, setup.token).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "one two three four five"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    assert sum(requests_per_key(fake).values()) == 1  # the client had bytes already: no retry


def test_5xx_is_retried_on_another_credential_within_the_budget(fake, gateway):
    setup = pool(fake, retry_budget=0)
    fake.state.add_fault(KEY_A, "status", status=500)
    fake.state.add_fault(KEY_B, "status", status=500)
    with pytest.raises(openai.InternalServerError):
        ask(gateway, setup.token)
    assert sum(requests_per_key(fake).values()) == 1  # a budget of 0 retries means one attempt
    services.save_route("gpt-test", [services.TargetSpec(setup.provider)], retry_budget=1)
    fake.state.clear_faults(KEY_B)
    assert ask(gateway, setup.token, text="second try") == "echo: second try"


def test_gemini_retry_info_sets_the_cooldown(fake, gateway):
    setup = make_setup(fake.url, kind="gemini", secrets=(KEY_A, KEY_B))
    fake.state.add_fault(KEY_A, "status", status=429, retry_after=30)
    for i in range(6):
        assert ask(gateway, setup.token, text=f"g{i}") == f"echo: g{i}"
    assert requests_per_key(fake) == {KEY_A: 1, KEY_B: 6}
    health = health_of(setup.credentials[0])
    assert health["status"] == "cooling" and 25 < health["cooldown_seconds"] <= 30  # RetryInfo's 30s


def test_headroom_reads_anthropic_rate_limit_headers(fake, gateway):
    setup = make_setup(fake.url, kind="anthropic", secrets=(KEY_A, KEY_B))
    services.save_route("gpt-test", [services.TargetSpec(setup.provider)], strategy="headroom")
    fake.state.set_ratelimit(KEY_A, remaining_requests=2, limit_requests=1000, reset_requests=120)
    for i in range(12):
        ask(gateway, setup.token, text=f"a{i}")
    per_key = requests_per_key(fake)
    assert per_key[KEY_A] <= 2 and per_key[KEY_B] >= 10
    assert health_of(setup.credentials[0])["remaining_requests"] == 2


def test_repeated_5xx_cools_a_credential_down_with_backoff(fake, gateway, settings):
    # A base long enough that the cooldown cannot run out while the ten requests are served on a busy machine.
    settings.DS2API_COOLDOWN_BASE_SECONDS = 30.0
    setup = pool(fake)
    fake.state.add_fault(KEY_A, "status", status=502)
    for i in range(10):
        assert ask(gateway, setup.token, text=f"b{i}") == f"echo: b{i}"  # B answers every retry
    a = wait_until(lambda: (h := health_of(setup.credentials[0]))["status"] == "cooling" and h)
    # three failures in a row start a cooldown (the base, then doubling); B kept the clients whole
    assert a["consecutive_failures"] == 3 and a["status"] == "cooling" and 0 < a["cooldown_seconds"] <= 30
    assert requests_per_key(fake)[KEY_A] == 3
