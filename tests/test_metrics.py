"""GET /metrics (Prometheus text) and its protection, and the one JSON log line per request."""

from __future__ import annotations

import io
import logging

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ds2api_site.jsonlog import JsonFormatter
from routing import health
from routing.models import HealthStatus
from tests.conftest import make_setup, wait_for_usage_rows

SECRET = "sk-fake-metrics-key-7311"


def scrape(gateway, **headers) -> dict[tuple, float]:
    response = httpx.get(gateway.url + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert SECRET not in response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


@pytest.fixture
def setup(fake, gateway):
    return make_setup(fake.url, secrets=(SECRET,), provider_name="metered")


def chat(gateway, token: str, **kwargs):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "count these words"}], **kwargs)


def test_requests_tokens_latency_and_errors_per_route_provider_and_credential(gateway, setup):
    where = {"route": "gpt-test", "provider": "metered", "credential": "acct-0"}
    before = scrape(gateway)
    chat(gateway, setup.token)
    stream = chat(gateway, setup.token, stream=True).parse()
    list(stream)
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, "ds2-not-a-real-token-000000000000")
    assert len(wait_for_usage_rows(3)) == 3  # each request is accounted just after its response went out
    after = scrape(gateway)

    def delta(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ds2api_requests_total", **where, protocol="openai_chat", status=200) == 2
    assert delta("ds2api_tokens_total", **where, kind="input") == 2 * 3
    assert delta("ds2api_tokens_total", **where, kind="output") == 2 * 4
    assert delta("ds2api_request_duration_seconds_count", **where) == 2
    assert delta("ds2api_time_to_first_byte_seconds_count", **where) == 1  # only the stream has one
    refused = {"route": "none", "provider": "none", "credential": "none"}
    assert delta("ds2api_requests_total", **refused, protocol="openai_chat", status=401) == 1
    assert delta("ds2api_request_errors_total", **refused, error_type="authentication") == 1
    assert ("ds2api_usage_buffer_rows", ()) in after


def test_credential_state_and_in_flight_come_from_shared_health(gateway, setup):
    credential = setup.credentials[0]
    chat(gateway, setup.token)  # loads the snapshot that names the credential
    health.set_health(credential.pk, HealthStatus.COOLING, error="HTTP 429", cooldown_seconds=120)
    samples = scrape(gateway)
    names = {"provider": "metered", "credential": "acct-0"}
    assert value(samples, "ds2api_credential_state", **names, state="cooling") == 1
    assert value(samples, "ds2api_credential_state", **names, state="ok") == 0
    assert 100 < value(samples, "ds2api_credential_cooldown_seconds", **names) <= 120
    assert value(samples, "ds2api_credential_in_flight", **names) == 0

    health.set_health(credential.pk, HealthStatus.INVALID, error="HTTP 401")
    samples = scrape(gateway)
    assert value(samples, "ds2api_credential_state", **names, state="invalid") == 1
    health.reset_health(credential.pk)
    wait_for_usage_rows(1)


def test_a_bearer_token_protects_metrics(gateway, settings):
    settings.DS2API_METRICS_TOKEN = "scrape-me-please-0123456789"
    assert httpx.get(gateway.url + "/metrics").status_code == 401
    assert httpx.get(gateway.url + "/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
    # A token configured means loopback alone is no longer enough.
    scrape(gateway, authorization="Bearer scrape-me-please-0123456789")


def test_an_address_allowlist_protects_metrics(gateway, settings):
    settings.DS2API_METRICS_ALLOW = ["10.0.0.0/8", "192.168.1.7"]
    response = httpx.get(gateway.url + "/metrics")
    assert response.status_code == 403 and "ds2api_requests" not in response.text
    settings.DS2API_METRICS_ALLOW = ["10.0.0.0/8", "127.0.0.0/8"]
    scrape(gateway)
    # Either way in: outside the allowlist, the token still works.
    settings.DS2API_METRICS_ALLOW = ["10.0.0.0/8"]
    settings.DS2API_METRICS_TOKEN = "scrape-me-please-0123456789"
    scrape(gateway, authorization="Bearer scrape-me-please-0123456789")


@pytest.fixture
def request_lines():
    logger = logging.getLogger("ds2api.requests")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        yield lambda: [orjson.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)


def test_one_json_log_line_per_request_with_its_id(gateway, setup, request_lines):
    raw = chat(gateway, setup.token)
    request_id = raw.headers["x-request-id"]
    wait_for_usage_rows(1)  # the line is written with the usage row, just after the response went out
    lines = [line for line in request_lines() if line["request_id"] == request_id]
    assert len(lines) == 1
    line = lines[0]
    assert line["logger"] == "ds2api.requests" and line["level"] == "INFO"
    assert (line["route"], line["provider"], line["credential"], line["status"]) == ("gpt-test", "metered", "acct-0", 200)
    assert (line["input_tokens"], line["output_tokens"]) == (3, 4)
    assert line["team"] == setup.team.name and isinstance(line["latency_ms"], int)
    assert SECRET not in str(line) and setup.token not in str(line)


def test_the_request_log_can_be_turned_off(gateway, setup, request_lines, settings):
    settings.DS2API_REQUEST_LOG = False
    chat(gateway, setup.token)
    wait_for_usage_rows(1)
    assert request_lines() == []


async def test_tallied_updates_render_as_direct_updates_would():
    """Per-request updates are tallied and applied a few times a second (proxy.metrics._Tally); what a scrape
    then reads must be exactly what updating prometheus-client directly gives (this also catches a
    prometheus-client release that changes the histogram internals the tally writes to)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from proxy.metrics import LATENCY_BUCKETS, _Tally

    observations = [0.01, 0.07, 0.3, 0.3, 2.0, 299.0, 400.0]
    rendered = []
    for tallied in (False, True):
        registry = CollectorRegistry()
        latency = Histogram("t_latency_seconds", "t", ["route"], buckets=LATENCY_BUCKETS, registry=registry).labels("r")
        tokens = Counter("t_tokens", "t", ["route"], registry=registry).labels("r")
        tally = _Tally()
        for seconds in observations:
            if tallied:
                tally.observe(latency, seconds)
                tally.inc(tokens, 3)
            else:
                latency.observe(seconds)
                tokens.inc(3)
        if tallied:
            assert tally.histograms and tally.counters  # held back within the running event loop...
            tally.flush()  # ...until the timer (or a scrape) applies them
        rendered.append([line for line in generate_latest(registry).decode().splitlines() if "_created" not in line])
    assert rendered[0] == rendered[1]
    assert 't_latency_seconds_bucket{le="0.1",route="r"} 2.0' in rendered[1]
