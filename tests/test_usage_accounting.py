"""Exactly one usage row per request, whatever happens to it, with the tokens the provider reported.

2,000 mixed requests, 50 at a time: plain and streamed replies (some retried on another credential after a
503), reasoning, streams the client aborts midway, requests the provider refuses (400) and requests to a
failing provider (500, then cooling down).
"""

import asyncio
import json
import time

import httpx
import pytest
from django.db.models import Count, Q, Sum

from proxy.models import UsageRecord
from routing import services
from tests.conftest import make_setup

KEY_A, KEY_B = "sk-fake-use-aaa-0001", "sk-fake-use-bbb-0002"
KEY_DRIP, KEY_BAD, KEY_FLAKY = "sk-fake-drip-0003", "sk-fake-bad-0004", "sk-fake-flaky-0005"
TOTAL, CONCURRENCY = 2000, 50
ABORT_AFTER_LINES = 6  # the "long" reply has 200 chunks; the client hangs up after a few


def _provider(fake, name: str, secret: str, model: str, **route):
    provider = services.save_provider(name, kind="openai", base_url=fake.url + "/v1")
    services.save_credential(provider, "only", secret=secret)
    services.save_route(model, [services.TargetSpec(provider)], **route)


async def _one(client: httpx.AsyncClient, token: str, i: int) -> dict:
    headers = {"authorization": f"Bearer {token}"}
    kind = ("plain", "plain", "plain", "plain", "stream", "stream", "abort", "bad", "flaky", "reason")[i % 10]
    model = {"abort": "long-abort", "bad": "gpt-bad", "flaky": "gpt-flaky", "reason": "reason-test"}.get(kind,
                                                                                                      "gpt-test")
    body = {"model": model, "messages": [{"role": "user", "content": f"request number {i}"}]}
    if kind in ("stream", "abort"):
        body.update(stream=True, stream_options={"include_usage": True})
        async with client.stream("POST", "/v1/chat/completions", headers=headers, json=body) as response:
            usage, lines = None, 0
            async for line in response.aiter_lines():
                lines += 1
                if kind == "abort" and lines >= ABORT_AFTER_LINES:
                    return {"kind": kind, "status": response.status_code, "usage": None}
                if line.startswith("data: {") and '"usage":{' in line:
                    usage = json.loads(line[6:])["usage"]
            return {"kind": kind, "status": response.status_code, "usage": usage}
    response = await client.post("/v1/chat/completions", headers=headers, json=body)
    usage = response.json().get("usage") if response.status_code == 200 else None
    return {"kind": kind, "status": response.status_code, "usage": usage}


async def _run(url: str, token: str) -> list[dict]:
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def guarded(i: int) -> dict:
            async with gate:
                return await _one(client, token, i)

        return await asyncio.gather(*(guarded(i) for i in range(TOTAL)))


def _wait_for_rows(rows, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while rows.count() < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # a late extra row would show up here
    return rows.count()


def test_two_thousand_mixed_requests_make_two_thousand_exact_rows(fake, gateway):
    setup = make_setup(fake.url, secrets=(KEY_A, KEY_B))
    _provider(fake, "fake-reason", KEY_A.replace("aaa", "rsn"), "reason-test")
    _provider(fake, "fake-drip", KEY_DRIP, "long-abort")
    _provider(fake, "fake-bad", KEY_BAD, "gpt-bad")
    _provider(fake, "fake-flaky", KEY_FLAKY, "gpt-flaky", retry_budget=0, queue_timeout=0)
    fake.state.add_fault(KEY_DRIP, "drip", delay=0.01)
    fake.state.add_fault(KEY_BAD, "status", status=400)
    fake.state.add_fault(KEY_FLAKY, "status", status=500)
    fake.state.add_fault(KEY_A, "status", status=503, count=40)  # retried on B: still one row each
    # rows a previous test's stragglers may still write are not this test's
    last_id = UsageRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0

    results = asyncio.run(_run(gateway.url, setup.token))

    rows = UsageRecord.objects.filter(id__gt=last_id)
    assert _wait_for_rows(rows, TOTAL) == TOTAL
    by_kind = {kind: [r for r in results if r["kind"] == kind] for kind in {r["kind"] for r in results}}
    assert all(r["status"] == 200 for kind in ("plain", "stream", "reason", "abort") for r in by_kind[kind])
    assert all(r["status"] == 400 for r in by_kind["bad"])
    assert all(r["status"] in (500, 429) for r in by_kind["flaky"])

    # Every completed reply: the row holds exactly what the provider reported (and the client saw).
    reported = rows.filter(estimated=False).aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"))
    seen = [r["usage"] for kind in ("plain", "stream", "reason") for r in by_kind[kind]]
    assert all(seen)
    assert reported["i"] == sum(u["prompt_tokens"] for u in seen)
    assert reported["o"] == sum(u["completion_tokens"] for u in seen)
    stats = fake.state.stats(arrivals=False)["keys"]
    served_keys = [KEY_A, KEY_B, KEY_A.replace("aaa", "rsn")]
    assert reported["i"] == sum(stats[k]["prompt_tokens"] for k in served_keys)
    assert reported["o"] == sum(stats[k]["completion_tokens"] for k in served_keys)

    # Streams the client aborted: one row each, flagged estimated, partial output counted.
    aborted = rows.filter(estimated=True)
    assert aborted.count() == len(by_kind["abort"]) == TOTAL // 10
    assert set(aborted.values_list("status", flat=True)) == {499}
    assert set(aborted.values_list("client_model", flat=True)) == {"long-abort"}
    full_reply = stats[KEY_DRIP]["completion_tokens"] // stats[KEY_DRIP]["requests"]
    for input_tokens, output_tokens in aborted.values_list("input_tokens", "output_tokens"):
        assert input_tokens > 0 and 0 < output_tokens < full_reply

    # Refused and failed requests: one row each, no tokens.
    failed = rows.filter(status__in=(400, 429, 500))
    assert failed.count() == len(by_kind["bad"]) + len(by_kind["flaky"])
    assert failed.aggregate(t=Sum("input_tokens") + Sum("output_tokens"))["t"] == 0
    per_status = dict(rows.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    assert sum(per_status.values()) == TOTAL
    assert rows.filter(Q(streamed=True)).count() == len(by_kind["stream"]) + len(by_kind["abort"])
    assert rows.filter(attempts=2, status=200, client_model="gpt-test").exists()


@pytest.mark.django_db(transaction=True)
async def test_a_batch_stored_although_its_write_failed_is_not_stored_twice(monkeypatch):
    """The rows went in but the write still failed afterwards (as when a commit's answer is lost): the batch
    comes back for another try, which must not count those requests a second time."""
    from django.db import OperationalError

    from proxy import usage

    stored = usage.budgets.add_spend
    failures = iter([OperationalError("server closed the connection unexpectedly")])

    def add_spend_once_failing(rows):
        stored(rows)
        failure = next(failures, None)
        if failure is not None:
            raise failure

    monkeypatch.setattr(usage.budgets, "add_spend", add_spend_once_failing)
    monkeypatch.setattr(usage.live_feed, "schedule_usage", lambda rows: None)  # no dashboard listening here
    recorder = usage.UsageRecorder()
    for i in range(3):
        recorder.add(request_id=f"twice-{i}", client_protocol="openai_chat", status=200, input_tokens=2)
    assert await recorder.flush() == 0  # failed: kept to retry
    recorder.add(request_id="twice-3", client_protocol="openai_chat", status=200, input_tokens=2)
    await recorder.close()  # writes what is left (the recorder's own flusher may have been first)
    ids = await asyncio.to_thread(lambda: sorted(UsageRecord.objects.filter(
        request_id__startswith="twice-").values_list("request_id", flat=True)))
    assert ids == ["twice-0", "twice-1", "twice-2", "twice-3"]


@pytest.mark.django_db(transaction=True)
async def test_a_database_error_inside_the_copy_keeps_the_rows(monkeypatch):
    """COPY runs on psycopg's own cursor: an error there (the server going away mid-batch) must not escape the
    flusher and take the batch with it."""
    from proxy import usage

    monkeypatch.setattr(usage.live_feed, "schedule_usage", lambda rows: None)
    monkeypatch.setattr(usage, "_COPY_SQL", "COPY no_such_table (id) FROM STDIN")
    recorder = usage.UsageRecorder()
    for i in range(3):
        recorder.add(request_id=f"copy-{i}", client_protocol="openai_chat", status=200)
    assert await recorder.flush() == 0  # failed, nothing lost
    monkeypatch.undo()
    monkeypatch.setattr(usage.live_feed, "schedule_usage", lambda rows: None)
    await recorder.close()
    ids = await asyncio.to_thread(lambda: sorted(UsageRecord.objects.filter(
        request_id__startswith="copy-").values_list("request_id", flat=True)))
    assert ids == ["copy-0", "copy-1", "copy-2"]


@pytest.mark.django_db(transaction=True)
async def test_rows_the_database_refuses_are_dropped_alone(monkeypatch, caplog):
    """A row the database refuses must not hold the batch (and every later one) back; impossible token counts
    from a provider are kept within what the columns hold rather than refused."""
    from proxy import usage

    monkeypatch.setattr(usage.live_feed, "schedule_usage", lambda rows: None)
    recorder = usage.UsageRecorder()
    recorder.add(request_id="refused-ok-1", client_protocol="openai_chat", status=200, input_tokens=3)
    recorder.add(request_id="refused-negative", client_protocol="openai_chat", status=200, input_tokens=-5)
    recorder.add(request_id="refused-huge", client_protocol="openai_chat", status=200, output_tokens=3_000_000_000)
    recorder.add(request_id="refused-bad", client_protocol="x" * 40, status=200)  # past the column's 30
    recorder.add(request_id="refused-ok-2", client_protocol="openai_chat", status=200, input_tokens=4)
    await recorder.close()
    rows = await asyncio.to_thread(lambda: dict(UsageRecord.objects.filter(request_id__startswith="refused-")
                                                .values_list("request_id", "input_tokens")))
    assert rows == {"refused-ok-1": 3, "refused-negative": 0, "refused-huge": 0, "refused-ok-2": 4}
    huge = await asyncio.to_thread(lambda: UsageRecord.objects.get(request_id="refused-huge").output_tokens)
    assert huge == 2**31 - 1
    assert "refused-bad" in caplog.text
