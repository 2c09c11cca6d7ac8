"""The first end-to-end path: the official openai SDK through the gateway to the fake upstream."""

import threading
import time

import httpx
import openai
import pytest

from accounts import services as account_services
from accounts.models import GatewayToken
from tests.conftest import make_setup, wait_for_usage_rows


def client(gateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)


def test_chat_reply_through_the_gateway(setup_openai, gateway, fake):
    reply = client(gateway, setup_openai.token).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hello there gateway"}]
    )
    assert reply.choices[0].message.content == "echo: hello there gateway"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "gpt-test"
    assert reply.usage.prompt_tokens == 3 and reply.usage.completion_tokens == 4
    # The gateway's own token never reaches the provider; the credential's secret does.
    last = fake.state.last_request()
    assert last["headers"]["authorization"].endswith("0001")
    rows = wait_for_usage_rows(1)
    assert len(rows) == 1
    row = rows[0]
    assert (row.status, row.input_tokens, row.output_tokens, row.streamed) == (200, 3, 4, False)
    assert row.credential_id == setup_openai.credentials[0].id and row.team_id == setup_openai.team.id


def test_streamed_reply_and_usage(setup_openai, gateway):
    stream = client(gateway, setup_openai.token).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage.prompt_tokens == 3 and chunks[-1].usage.completion_tokens == 4
    row = wait_for_usage_rows(1)[0]
    assert (row.streamed, row.input_tokens, row.output_tokens) == (True, 3, 4)


def test_first_chunk_arrives_before_the_upstream_finishes(setup_openai, gateway, fake):
    fake.state.configure(chunk_delay=0.3)
    stream = client(gateway, setup_openai.token).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "a b c d e f"}], stream=True
    )
    start = time.monotonic()
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    # 7 words at 0.3 s apart: the upstream needs ~2 s to finish; the first word must not wait for it.
    assert len(arrivals) == 7
    assert arrivals[0] < arrivals[-1] - 1.0


def test_models_list_names_the_routes(setup_openai, gateway):
    models = client(gateway, setup_openai.token).models.list()
    assert [m.id for m in models.data] == ["gpt-test"]


def test_model_lists_name_route_aliases_a_token_may_call(setup_openai, gateway):
    from routing import services

    services.save_route("gpt-test", [services.TargetSpec(setup_openai.provider, "gpt-test")],
                        aliases=["gpt-latest", "internal-beta"])
    limited = account_services.issue_token(setup_openai.team, "no-internal", allowed_models=["gpt-*"]).plaintext

    def names(token: str) -> list[str]:
        deadline = time.monotonic() + 5  # the snapshot reloads when the change is announced
        while True:
            listed = [m.id for m in client(gateway, token).models.list().data]
            if len(listed) > 1 or time.monotonic() > deadline:
                return listed
            time.sleep(0.05)

    assert names(setup_openai.token) == ["gpt-test", "gpt-latest", "internal-beta"]
    assert names(limited) == ["gpt-test", "gpt-latest"]
    assert client(gateway, limited).models.retrieve("gpt-latest").id == "gpt-latest"
    tags = httpx.get(gateway.url + "/api/tags", headers={"authorization": f"Bearer {limited}"}).json()
    assert [m["name"] for m in tags["models"]] == ["gpt-test", "gpt-latest"]
    # and an alias answers as its route
    reply = client(gateway, limited).chat.completions.create(
        model="gpt-latest", messages=[{"role": "user", "content": "via alias"}])
    assert reply.choices[0].message.content == "echo: via alias"


@pytest.mark.parametrize("token", [None, "ds2-not-a-real-token-000000000000", "garbage"])
def test_missing_or_invalid_token_gets_401_openai_error(setup_openai, gateway, token):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=headers,
        json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["message"]


def test_revoked_token_is_refused(setup_openai, gateway):
    sdk = client(gateway, setup_openai.token)
    sdk.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "ok"}])
    account_services.revoke_token(GatewayToken.objects.get(team=setup_openai.team))
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "ok"}])


def test_expired_token_is_refused(setup_openai, gateway):
    from datetime import timedelta

    from django.utils import timezone

    issued = account_services.issue_token(
        setup_openai.team, "short-lived", expires_at=timezone.now() + timedelta(seconds=1)
    )
    time.sleep(1.1)
    with pytest.raises(openai.AuthenticationError):
        client(gateway, issued.plaintext).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "ok"}]
        )


def test_token_stored_only_as_digest(setup_openai):
    row = GatewayToken.objects.get(team=setup_openai.team)
    values = [str(v) for v in GatewayToken.objects.filter(pk=row.pk).values().first().values()]
    assert not any(setup_openai.token in v for v in values)
    assert row.prefix == setup_openai.token[:12] and len(row.digest) == 64


def test_unknown_model_is_404_openai_error(setup_openai, gateway):
    with pytest.raises(openai.NotFoundError) as info:
        client(gateway, setup_openai.token).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["code"] == "model_not_found"


def test_upstream_error_keeps_status_as_openai_error(setup_openai, gateway, fake):
    fake.state.add_fault("*", "status", status=400, message="context too long")
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway, setup_openai.token).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
    assert "context too long" in info.value.message


def test_bad_json_is_400(setup_openai, gateway):
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=b"{nope",
        headers={"authorization": f"Bearer {setup_openai.token}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_round_robin_over_credentials(fake, gateway):
    setup = make_setup(fake.url, secrets=("sk-fake-aaaa0001", "sk-fake-bbbb0002"))
    sdk = client(gateway, setup.token)
    for _ in range(4):
        sdk.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    per_key = {key[-4:]: stats["requests"] for key, stats in fake.state.stats(arrivals=False)["keys"].items()}
    assert per_key == {"0001": 2, "0002": 2}


def test_health_and_readiness(gateway):
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "redis": "ok", "limits": "ok"}


def test_dashboard_login_is_served_by_django(gateway):
    response = httpx.get(gateway.url + "/login/")
    assert response.status_code == 200 and "Sign in" in response.text


def test_concurrent_streams_do_not_mix(setup_openai, gateway):
    results = {}

    def run(i):
        stream = client(gateway, setup_openai.token).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": f"stream number {i}"}], stream=True
        )
        results[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"echo: stream number {i}" for i in range(8)}
