"""Usage charts and tables, CSV downloads, the request log and the playground's short-lived token."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import openai
import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import GatewayToken
from proxy import rollup_writer
from proxy.models import RollupState, UsageRecord
from proxy.selectors import UsageQuery, request_log, usage_breakdown, usage_series, usage_totals
from tests.conftest import make_setup, wait_for_usage_rows
from tests.factories import MembershipFactory, make_world

pytestmark = pytest.mark.django_db


def row(at, **fields) -> UsageRecord:
    values = {"created_at": at, "client_protocol": "openai_chat", "client_model": "gpt-a", "status": 200,
              "input_tokens": 10, "output_tokens": 5, "latency_ms": 200, "team_id": 1, "token_id": 11,
              "credential_id": 101, "cost_usd": Decimal("0.001"), **fields}
    return UsageRecord.objects.create(**values)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_series_from_rollups_and_the_raw_tail_count_every_row_once():
    now = timezone.now()
    old = [row(now - timedelta(hours=5, minutes=i)) for i in range(4)]
    old.append(row(now - timedelta(hours=3), status=500, credential_id=102, latency_ms=3000))
    rollup_writer.roll_up_pending(now - timedelta(hours=2))  # rolled up to two hours ago
    assert RollupState.objects.get(name="usage").rolled_until is not None
    fresh = [row(now - timedelta(minutes=m)) for m in (30, 10, 1)]

    query = UsageQuery(start=now - timedelta(hours=24), end=now)
    granularity, points = usage_series(query)
    assert granularity == "hour" and len(points) in (24, 25)
    totals = usage_totals(points)
    assert (totals.requests, totals.errors) == (len(old) + len(fresh), 1)
    assert totals.input_tokens == 10 * 8 and totals.cost_usd == Decimal("0.008")
    per_credential = {key: stats.requests for key, stats in usage_breakdown(query, "credential")}
    assert per_credential == {101: 7, 102: 1}
    only_101 = usage_totals(usage_series(UsageQuery(start=now - timedelta(hours=24), end=now, credential_id=101))[1])
    assert only_101.requests == 7 and only_101.p95_ms is not None


def test_multi_day_breakdowns_read_day_rollups_without_double_counting():
    now = timezone.now()
    for hours, credential in ((70, 101), (50, 101), (30, 102), (3, 101)):
        row(now - timedelta(hours=hours), credential_id=credential)
    rollup_writer.roll_up_pending(now - timedelta(hours=1))
    row(now - timedelta(minutes=10), credential_id=102)
    query = UsageQuery(start=now - timedelta(days=3), end=now)
    assert {key: stats.requests for key, stats in usage_breakdown(query, "credential")} == {101: 3, 102: 2}
    assert usage_totals(usage_series(query)[1]).requests == 5
    team = UsageQuery(start=now - timedelta(days=3), end=now, team_id=1, team_ids=(1,))
    assert [(key, stats.requests) for key, stats in usage_breakdown(team, "model")] == [("gpt-a", 5)]


def test_a_team_scope_sees_only_its_rows():
    now = timezone.now()
    row(now - timedelta(minutes=5), team_id=1, client_model="gpt-a")
    row(now - timedelta(minutes=5), team_id=2, client_model="gpt-b")
    query = UsageQuery(start=now - timedelta(hours=1), end=now, team_id=1, team_ids=(1,))
    assert usage_totals(usage_series(query)[1]).requests == 1
    assert [key for key, _ in usage_breakdown(query, "model")] == ["gpt-a"]
    mine_only = UsageQuery(start=None, end=None, team_ids=(1,))
    assert {r.team_id for r in request_log(mine_only)[0]} == {1}


def test_request_log_filters_and_pages_newest_first():
    now = timezone.now()
    rows = [row(now - timedelta(seconds=i), status=200 if i % 3 else 502) for i in range(7)]
    page, next_before = request_log(UsageQuery(start=None, end=None), limit=3)
    assert [r.pk for r in page] == [r.pk for r in sorted(rows, key=lambda r: -r.pk)[:3]]
    page2, _ = request_log(UsageQuery(start=None, end=None), limit=3, before_id=next_before)
    assert page2[0].pk < page[-1].pk
    errors, _ = request_log(UsageQuery(start=None, end=None), status="5xx")
    assert {r.status for r in errors} == {502} and len(errors) == 3
    assert request_log(UsageQuery(start=None, end=None, model="nope"))[0] == []


@pytest.fixture
def world():
    return make_world()


def test_usage_page_and_csv_for_a_team(world):
    now = timezone.now()
    for minutes in (3, 2, 1):
        row(now - timedelta(minutes=minutes), team_id=world.team.pk, token_id=None, client_model="gpt-a")
    row(now - timedelta(minutes=1), team_id=world.other_team.pk, token_id=None, client_model="gpt-secret")
    client = signed_in(world.user("viewer"))
    page = client.get(f"/usage/?team={world.team.pk}&range=1h&by=model")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-total="requests">3<' in html and "gpt-secret" not in html
    assert 'id="usage-data"' in html and 'data-chart="latency"' in html
    for metric, header in (("requests", "requests"), ("tokens", "input"), ("cost", "cost USD"),
                           ("errors", "error %"), ("latency", "p50")):
        response = client.get(f"/usage/export.csv?team={world.team.pk}&range=1h&metric={metric}")
        assert response["Content-Type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(response.content.decode())))
        assert header in table[0]
        if metric == "requests":
            assert sum(int(r[1]) for r in table[1:]) == 3
    breakdown = list(csv.reader(io.StringIO(
        client.get(f"/usage/export.csv?team={world.team.pk}&range=1h&metric=breakdown&by=model").content.decode())))
    assert breakdown[1][0] == "gpt-a" and breakdown[1][2] == "3" and len(breakdown) == 2


def test_custom_range_errors_are_shown_not_raised(world):
    client = signed_in(world.user("owner"))
    response = client.get("/usage/?range=custom&start=2026-11-02T10:00&end=2026-11-01T10:00")
    assert response.status_code == 200 and "a custom range needs a start before its end" in response.content.decode()
    response = client.get("/usage/?range=custom&start=2026-11-01T00:00&end=2026-11-03T00:00")
    assert response.status_code == 200 and "hour buckets" in response.content.decode()


def test_request_log_page_filters_by_status_and_links_to_details(world):
    now = timezone.now()
    ok = row(now - timedelta(seconds=2), team_id=world.team.pk, token_id=None)
    failed = row(now - timedelta(seconds=1), team_id=world.team.pk, token_id=None, status=429,
                 error_type="rate_limit")
    client = signed_in(world.user("member"))
    html = client.get("/requests/?status=4xx").content.decode()
    assert f"/requests/{failed.pk}/" in html and f"/requests/{ok.pk}/" not in html
    detail = client.get(f"/requests/{failed.pk}/").content.decode()
    assert "rate_limit" in detail and "429" in detail


# --- playground ------------------------------------------------------------------------------------


def test_playground_token_is_short_lived_and_works_through_the_gateway(fake, gateway):
    setup = make_setup(fake.url, team_name="alpha")
    member = MembershipFactory(team=setup.team, role="member", user__username="pg-member").user
    client = signed_in(member)
    page = client.get("/playground/").content.decode()
    assert "gpt-test" in page and "openai_chat" in page and "ds2-" not in page
    response = client.post("/playground/token/", {"team": setup.team.pk})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    token = response.json()["token"]
    stored = GatewayToken.objects.get(prefix=token[:12])
    assert stored.team == setup.team and stored.created_by == member
    assert timedelta(minutes=10) < stored.expires_at - timezone.now() <= timedelta(minutes=15)
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    reply = sdk.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi there"}])
    assert reply.choices[0].message.content == "echo: hi there"
    assert wait_for_usage_rows(1)[0].token_id == stored.pk
