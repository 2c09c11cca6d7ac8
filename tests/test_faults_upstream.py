"""Upstream faults survived: what a client sees when the provider misbehaves, and that every request still
leaves exactly one usage row.

Every fault the fake upstream can play is tried: connection refused, timeouts, resets before and in the
middle of a body, malformed JSON, malformed and truncated SSE, 5xx storms, slow drip streams and huge
replies. With a second credential healthy, the client sees no error at all (the failure happened before
its first byte); with none, it gets an error in its own protocol's shape (never an HTML page or a bare
500), and after the first byte a stream ends with the protocol's error event.
"""

import socket
import time

import httpx
import orjson
import pytest

from proxy.models import UsageRecord
from routing import services
from tests.conftest import make_setup, wait_for_usage_rows

KEY_A, KEY_B = "sk-fault-aaaa-0001", "sk-fault-bbbb-0002"
CHAT = "/v1/chat/completions"


def closed_port() -> int:
    """A port nothing listens on (bound, then released, so connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(gateway, token: str, body: dict, path: str = CHAT, **headers) -> httpx.Response:
    return httpx.post(gateway.url + path, json=body, headers={"authorization": f"Bearer {token}", **headers},
                      timeout=30)


def chat(text: str = "hello there", stream: bool = False, model: str = "gpt-test", **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    if stream:
        body["stream"] = True
    return body


def sse_payloads(response: httpx.Response) -> list:
    """The data payloads of an SSE body ([DONE] kept as a string)."""
    out = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def streamed_text(response: httpx.Response) -> str:
    return "".join(
        (p["choices"][0]["delta"].get("content") or "")
        for p in sse_payloads(response)
        if isinstance(p, dict) and p.get("choices")
    )


def assert_openai_error(response: httpx.Response, status: int | None = None) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"] and "type" in error
    if status is not None:
        assert response.status_code == status, response.text
    return error


def rows_after(count: int) -> list[UsageRecord]:
    rows = wait_for_usage_rows(count)
    assert len(rows) == count, [(r.status, r.error_type) for r in rows]
    return rows


def settle_usage(gateway) -> None:
    """Wait until the in-process gateway has written every usage row it holds."""
    recorder = gateway.proxy_app.runtime.usage
    deadline = time.monotonic() + 5
    while (recorder.depth or recorder._flushing.locked()) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _own_usage_rows(gateway):
    """Rows a previous test's requests wrote after its tables were emptied must not count here."""
    settle_usage(gateway)
    UsageRecord.objects.all().delete()
    yield
    settle_usage(gateway)


@pytest.fixture
def pair(fake, gateway):
    """One route served by two credentials of one provider; faults keyed to A leave B healthy."""
    setup = make_setup(fake.url, secrets=(KEY_A, KEY_B))
    services.save_provider(setup.provider.name, kind="openai", base_url=fake.url + "/v1", read_timeout=1.0)
    return setup


def fault_first_key(fake, pair, mode: str, **params):
    """Put the fault on whichever credential the next request tries first (round robin starts anywhere)."""
    fake.state.add_fault(KEY_A, mode, **params)
    fake.state.add_fault(KEY_B, mode, count=1, **params)


# --- failover before the first byte: the client sees nothing wrong ------------------------------------

@pytest.mark.parametrize(
    ("mode", "params"),
    [
        ("status", {"status": 500}),
        ("status", {"status": 503}),
        ("status", {"status": 429, "retry_after": 30}),
        ("reset", {}),
        ("slow", {"delay": 3.0}),  # longer than the provider's 1 s read timeout
        ("cut", {}),  # half a JSON body, then the connection closes
        ("malformed", {}),  # half a JSON body with a 200 and a full Content-Length... then nothing
    ],
)
def test_plain_request_fails_over_to_the_healthy_credential(fake, gateway, pair, mode, params):
    fake.state.add_fault(KEY_A, mode, **params)
    for i in range(4):
        response = post(gateway, pair.token, chat(f"plain {i}"))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == f"echo: plain {i}"
    rows = rows_after(4)
    assert {r.status for r in rows} == {200}
    assert any(r.attempts == 2 for r in rows)  # at least one request met the fault and moved on


@pytest.mark.parametrize(
    ("mode", "params"),
    [
        ("status", {"status": 502}),
        ("reset", {}),
        ("slow", {"delay": 3.0}),
        ("cut", {"after": 0}),  # headers, then the connection closes before the first event
        ("malformed", {"after": 0}),  # the very first event is garbled
    ],
)
def test_stream_failing_before_its_first_event_fails_over(fake, gateway, pair, mode, params):
    fake.state.add_fault(KEY_A, mode, **params)
    for i in range(4):
        response = post(gateway, pair.token, chat(f"stream {i}", stream=True))
        assert response.status_code == 200
        assert streamed_text(response) == f"echo: stream {i}"
        assert sse_payloads(response)[-1] == "[DONE]"
    rows = rows_after(4)
    assert {r.status for r in rows} == {200} and all(r.streamed for r in rows)


def test_connection_refused_moves_on_to_the_next_target(fake, gateway):
    setup = make_setup(fake.url)
    dead = services.save_provider("dead-openai", kind="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1")
    services.save_credential(dead, "dead-1", secret="sk-dead-0000-0001")
    services.save_route("gpt-test", [services.TargetSpec(dead), services.TargetSpec(setup.provider)])
    for i in range(3):
        response = post(gateway, setup.token, chat(f"refused {i}"))
        assert response.status_code == 200, response.text
    assert {r.status for r in rows_after(3)} == {200}


# --- no healthy credential left: a protocol-native error, one usage row -------------------------------

def test_connection_refused_everywhere_is_a_502_in_each_protocol(fake, gateway):
    setup = make_setup(fake.url)
    services.save_provider(setup.provider.name, kind="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1")
    response = post(gateway, setup.token, chat())
    assert_openai_error(response, 502)
    anthropic = post(gateway, setup.token, {"model": "gpt-test", "max_tokens": 10,
                                            "messages": [{"role": "user", "content": "hi"}]}, "/v1/messages")
    assert anthropic.status_code >= 500 and anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] in {"api_error", "overloaded_error"}
    gemini = post(gateway, setup.token, {"contents": [{"parts": [{"text": "hi"}]}]},
                  "/v1beta/models/gpt-test:generateContent")
    assert gemini.status_code >= 500 and isinstance(gemini.json()["error"]["code"], int)
    ollama = post(gateway, setup.token, {"model": "gpt-test", "stream": False,
                                         "messages": [{"role": "user", "content": "hi"}]}, "/api/chat")
    assert ollama.status_code >= 500 and isinstance(ollama.json()["error"], str)
    rows = rows_after(4)
    assert all(r.status >= 500 and r.error_type for r in rows)
    assert all(r.input_tokens == 0 and r.output_tokens == 0 for r in rows)  # nothing reached a provider


def test_timeout_everywhere_is_a_504(fake, gateway, pair):
    fake.state.add_fault("*", "slow", delay=3.0)
    response = post(gateway, pair.token, chat())
    error = assert_openai_error(response, 504)
    assert "time" in error["message"]
    row = rows_after(1)[0]
    assert (row.status, row.error_type, row.attempts) == (504, "timeout", 2)


@pytest.mark.parametrize("mode", ["cut", "malformed"])
def test_broken_bodies_everywhere_are_a_502_never_a_crash(fake, gateway, pair, mode):
    fake.state.add_fault("*", mode)
    response = post(gateway, pair.token, chat())
    assert_openai_error(response, 502)
    row = rows_after(1)[0]
    assert row.status == 502 and row.attempts == 2


def test_a_5xx_storm_is_answered_in_protocol_and_the_gateway_recovers(fake, gateway, pair):
    fake.state.add_fault("*", "status", status=500)
    last = None
    for i in range(12):
        last = post(gateway, pair.token, chat(f"storm {i}"))
        assert last.status_code in (429, 500, 502, 503)
        assert_openai_error(last)
    # the credentials cooled down after repeated failures: later requests are turned away without a call,
    # told when to come back
    assert last.status_code in (429, 503) and int(last.headers["retry-after"]) >= 1
    assert fake.state.stats(arrivals=False)["total_requests"] < 24
    fake.state.clear_faults()
    for cred in pair.credentials:  # an admin re-tests the keys (or their cooldown runs out)
        services.save_credential(pair.provider, cred.name, secret=cred.name.replace("acct", "sk-new") + "-9999")
    response = post(gateway, pair.token, chat("after the storm"))
    assert response.status_code == 200
    rows = rows_after(13)
    assert [r.status for r in rows].count(200) == 1


# --- after the first byte: the stream ends with the protocol's own error event ----------------------

def test_stream_cut_after_its_first_events_ends_with_an_error_event(fake, gateway, pair):
    fake.state.add_fault("*", "cut", after=3)
    response = post(gateway, pair.token, chat("one two three four five six", stream=True))
    assert response.status_code == 200
    payloads = sse_payloads(response)
    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert len(errors) == 1 and errors[0]["error"]["message"]
    assert streamed_text(response).startswith("echo:")
    row = rows_after(1)[0]
    assert (row.status, row.streamed) == (502, True)
    assert row.output_tokens > 0 and row.estimated  # partial output is counted


def test_malformed_event_mid_stream_ends_with_an_error_event(fake, gateway, pair):
    fake.state.add_fault("*", "malformed", after=4)
    fake.state.configure(chunk_delay=0.05)  # the good events reach the gateway (and the client) first
    response = post(gateway, pair.token, chat("one two three four five six", stream=True))
    assert response.status_code == 200
    errors = [p for p in sse_payloads(response) if isinstance(p, dict) and "error" in p]
    assert len(errors) == 1
    assert rows_after(1)[0].status == 502


def test_anthropic_stream_cut_mid_way_ends_with_an_anthropic_error_event(fake, gateway, pair):
    fake.state.add_fault("*", "cut", after=4)
    body = {"model": "gpt-test", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "one two three four five six"}]}
    response = post(gateway, pair.token, body, "/v1/messages")
    assert response.status_code == 200
    events = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "error"
    assert rows_after(1)[0].status == 502


# --- slow and big: served, not buffered, not timed out -------------------------------------------------

def test_slow_drip_stream_is_relayed_to_the_end(fake, gateway, pair):
    # each gap is shorter than the read timeout, the whole stream longer: a drip is not a timeout
    fake.state.add_fault("*", "drip", delay=0.15)
    services.save_provider(pair.provider.name, kind="openai", base_url=fake.url + "/v1", read_timeout=0.5)
    text = " ".join(f"w{i}" for i in range(12))
    response = post(gateway, pair.token, chat(text, stream=True))
    assert streamed_text(response) == "echo: " + text
    row = rows_after(1)[0]
    assert row.status == 200 and not row.estimated


def test_huge_plain_and_streamed_replies_arrive_whole(fake, gateway, pair):
    size = 2_000_000
    fake.state.add_fault("*", "huge", size=size, count=2)
    plain = post(gateway, pair.token, chat("big"))
    assert plain.status_code == 200
    assert len(plain.json()["choices"][0]["message"]["content"]) == size
    with httpx.stream("POST", gateway.url + CHAT, json=chat("big", stream=True),
                      headers={"authorization": f"Bearer {pair.token}"}, timeout=60) as response:
        received = 0
        text_length = 0
        buffer = b""
        for chunk in response.iter_bytes():
            received += len(chunk)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data: {"):
                    choices = orjson.loads(line[6:]).get("choices")
                    if choices:
                        text_length += len(choices[0]["delta"].get("content") or "")
    assert text_length == size
    assert {r.status for r in rows_after(2)} == {200}


@pytest.mark.parametrize("mode", ["cut", "malformed", "reset"])
def test_embeddings_fail_over_like_generation(fake, gateway, pair, mode):
    fake.state.add_fault(KEY_A, mode)
    for i in range(3):
        response = post(gateway, pair.token, {"model": "gpt-test", "input": f"text {i}"}, "/v1/embeddings")
        assert response.status_code == 200, response.text
        assert response.json()["data"][0]["embedding"]
    assert {r.status for r in rows_after(3)} == {200}


def test_an_endless_plain_answer_is_cut_off_at_the_response_limit(fake, gateway, pair, settings):
    settings.DS2API_MAX_RESPONSE_BYTES = 100_000
    fake.state.add_fault(KEY_A, "huge", size=500_000)  # A answers far more than the limit; B answers normally
    for i in range(3):
        response = post(gateway, pair.token, chat(f"capped {i}"))
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == f"echo: capped {i}"
    fake.state.add_fault("*", "huge", size=500_000)
    error = assert_openai_error(post(gateway, pair.token, chat("too big")), 502)
    assert "DS2API_MAX_RESPONSE_BYTES" in error["message"]
    settings.DS2API_MAX_RESPONSE_BYTES = 1_000_000  # the same answer under a higher limit arrives whole
    whole = post(gateway, pair.token, chat("fits"))
    assert len(whole.json()["choices"][0]["message"]["content"]) == 500_000
