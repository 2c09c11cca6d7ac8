"""Usage rollups on a real Celery worker: idempotent re-rolls, catching up after a day's gap, retention, queries."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from proxy import retention, rollup_writer, rollups
from proxy.models import Granularity, RollupState, UsageRecord, UsageRollup
from proxy.tasks import reroll_usage, roll_up_usage
from tests.celery_worker import celery_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock(), celery_worker(tmp_path_factory.mktemp("celery")) as node:
        yield node


def make_rows(times: list[datetime], *, seed: int = 7) -> list[UsageRecord]:
    rng = random.Random(seed)
    rows = []
    for i, at in enumerate(times):
        status = rng.choice([200, 200, 200, 429, 500])
        rows.append(UsageRecord(
            created_at=at, request_id=f"r{i}", token_id=rng.choice([11, 12, 13]), team_id=rng.choice([1, 2]),
            credential_id=rng.choice([101, 102]), provider_id=1, client_protocol="openai_chat",
            client_model=rng.choice(["gpt-a", "gpt-b"]), status=status, input_tokens=rng.randint(1, 500),
            output_tokens=rng.randint(0, 300), cached_tokens=rng.randint(0, 20), reasoning_tokens=rng.randint(0, 9),
            cost_usd=Decimal(rng.randint(0, 10_000)) / Decimal(1_000_000), latency_ms=rng.choice([40, 180, 700, 3000, 70_000]),
            ttfb_ms=rng.choice([None, 30, 90]),
        ))
    return UsageRecord.objects.bulk_create(rows)


def rollup_numbers(granularity: str) -> dict[tuple, tuple]:
    fields = ["requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
              "cost_usd", "latency_ms_sum", "ttfb_ms_sum", "ttfb_count", "lat_100", "lat_inf"]
    return {
        (r["bucket"], r["dimension"], r["key"]): tuple(r[f] for f in fields)
        for r in UsageRollup.objects.filter(granularity=granularity).values("bucket", "dimension", "key", *fields)
    }


def expected_from_raw(rows: list[UsageRecord], granularity: str) -> dict[tuple, tuple]:
    """What the rollups must say, computed in Python from the raw rows: requests, errors, input tokens, cost."""
    out: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    for row in rows:
        bucket = rollup_writer.floor_to(row.created_at, granularity)
        keys = [("all", ""), ("credential", str(row.credential_id)), ("token", str(row.token_id)),
                ("team", str(row.team_id)), ("model", row.client_model),
                ("team_model", f"{row.team_id}:{row.client_model}")]
        for dimension, key in keys:
            acc = out[(bucket, dimension, key)]
            acc[0] += 1
            acc[1] += row.status >= 400
            acc[2] += row.input_tokens
            acc[3] += row.cost_usd
    return {k: tuple(v) for k, v in out.items()}


def short(numbers: dict[tuple, tuple]) -> dict[tuple, tuple]:
    return {k: (v[0], v[1], v[2], v[6]) for k, v in numbers.items()}


def test_rolling_the_same_minute_twice_gives_the_same_numbers(worker):
    minute = rollup_writer.floor_to(timezone.now() - timedelta(hours=2), Granularity.MINUTE)
    rows = make_rows([minute + timedelta(seconds=s) for s in range(0, 60, 2)])
    end = minute + timedelta(minutes=1)

    reroll_usage.delay(minute.isoformat(), end.isoformat())
    first = wait_until(lambda: rollup_numbers(Granularity.MINUTE), what="the first rollup")
    assert short(first) == expected_from_raw(rows, Granularity.MINUTE)
    first_hours, first_days = rollup_numbers(Granularity.HOUR), rollup_numbers(Granularity.DAY)
    assert short(first_hours) == expected_from_raw(rows, Granularity.HOUR)
    assert short(first_days) == expected_from_raw(rows, Granularity.DAY)

    # Tamper with the stored numbers: a re-roll must recompute them, not add to them.
    UsageRollup.objects.update(requests=999, errors=999, cost_usd=999)
    reroll_usage.delay(minute.isoformat(), end.isoformat())
    wait_until(lambda: not UsageRollup.objects.filter(requests=999).exists(), what="the second rollup")
    assert rollup_numbers(Granularity.MINUTE) == first
    assert rollup_numbers(Granularity.HOUR) == first_hours
    assert rollup_numbers(Granularity.DAY) == first_days


def test_a_gap_of_a_day_is_caught_up(worker):
    now = timezone.now()
    # The last run was a day ago; since then rows kept arriving, some of them late (a gateway that
    # buffered through an outage writes old timestamps with new ids).
    RollupState.objects.create(name=rollup_writer.STATE_NAME, last_usage_id=0, rolled_until=now - timedelta(days=1))
    rng = random.Random(3)
    rows = make_rows(sorted(now - timedelta(minutes=rng.randint(1, 26 * 60)) for _ in range(400)))

    roll_up_usage.delay()
    state = wait_until(
        lambda: RollupState.objects.filter(name=rollup_writer.STATE_NAME, last_usage_id=rows[-1].id).first(),
        what="the catch-up run",
    )
    assert state.rolled_until >= rollup_writer.floor_to(now, Granularity.MINUTE)
    for granularity in (Granularity.MINUTE, Granularity.HOUR, Granularity.DAY):
        assert short(rollup_numbers(granularity)) == expected_from_raw(rows, granularity), granularity


def test_a_rollup_run_picks_up_rows_written_late(worker):
    now = timezone.now()
    make_rows([now - timedelta(minutes=2)])
    roll_up_usage.delay()
    wait_until(lambda: UsageRollup.objects.filter(dimension="all", granularity="minute").exists(), what="run 1")
    late = make_rows([now - timedelta(hours=3), now - timedelta(hours=3, minutes=1)], seed=9)
    roll_up_usage.delay()
    bucket = rollup_writer.floor_to(late[0].created_at, Granularity.HOUR)
    hour = wait_until(lambda: UsageRollup.objects.filter(dimension="all", granularity="hour", bucket=bucket).first(),
                      what="the late rows' hour")
    assert hour.requests == 2


def test_retention_prunes_raw_rows_and_keeps_rollups(settings):
    settings.DS2API_USAGE_RETENTION_DAYS = 30
    settings.DS2API_MINUTE_ROLLUP_RETENTION_DAYS = 2
    now = timezone.now()
    old = make_rows([now - timedelta(days=40), now - timedelta(days=35)])
    recent = make_rows([now - timedelta(days=1), now - timedelta(hours=1)], seed=2)
    for row in old:  # their rollups were made back then, before the retention horizon moved past them
        rollup_writer.roll_window(row.created_at, row.created_at + timedelta(minutes=1))
    rollup_writer.roll_range(now - timedelta(days=2), now)

    # Before the rollups have run at all, no raw row is pruned: they are the only copy of their numbers.
    first = retention.prune()
    assert first.deleted.get("usage_rows") is None
    assert UsageRecord.objects.count() == 4
    assert first.deleted["minute_rollups"] == 2 * 6  # the two old minutes, in each of the six dimensions

    rollup_writer.roll_up_pending()
    report = retention.prune()
    assert report.deleted["usage_rows"] == 2
    assert set(UsageRecord.objects.values_list("id", flat=True)) == {r.id for r in recent}
    hours = UsageRollup.objects.filter(granularity="hour", dimension="all")
    assert hours.aggregate(n=Sum("requests"))["n"] == 4  # the old rows' hours survive their rows
    assert not UsageRollup.objects.filter(granularity="minute", bucket__lt=now - timedelta(days=3)).exists()
    assert retention.prune().deleted["usage_rows"] == 0  # idempotent


def test_old_buckets_are_not_recomputed_from_pruned_rows(settings):
    settings.DS2API_USAGE_RETENTION_DAYS = 30
    now = timezone.now()
    row = make_rows([now - timedelta(days=40)])[0]
    rollup_writer.roll_window(row.created_at, row.created_at + timedelta(minutes=1))
    UsageRecord.objects.all().delete()  # pruned
    rollup_writer.roll_range(now - timedelta(days=41), now)
    assert UsageRollup.objects.get(granularity="day", dimension="all").requests == 1


def test_query_functions_read_series_totals_and_breakdowns():
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = make_rows([start + timedelta(minutes=7 * i) for i in range(300)])  # ~35 hours
    rollup_writer.roll_window(start, start + timedelta(days=2))
    end = start + timedelta(days=2)

    series = rollups.usage_series("credential", 101, start, end)
    assert len(series) == 48 and series[0].bucket == start  # hourly, empty hours as zeros
    mine = [r for r in rows if r.credential_id == 101]
    assert sum(p.stats.requests for p in series) == len(mine)
    totals = rollups.usage_totals("credential", 101, start, end)
    assert totals.requests == len(mine)
    assert totals.errors == sum(r.status >= 400 for r in mine)
    assert totals.input_tokens == sum(r.input_tokens for r in mine)
    assert totals.cost_usd == sum(r.cost_usd for r in mine)
    assert 0 < totals.p50_ms <= totals.p95_ms
    assert totals.avg_latency_ms == pytest.approx(sum(r.latency_ms for r in mine) / len(mine))

    overview = rollups.overview(start, end)
    assert overview["totals"].requests == 300
    breakdown = dict(rollups.usage_breakdown("credential", start, end))
    assert set(breakdown) == {"101", "102"} and sum(s.requests for s in breakdown.values()) == 300
    team_models = rollups.usage_breakdown("team_model", start, end, key_prefix="1:")
    assert {key for key, _ in team_models} <= {"1:gpt-a", "1:gpt-b"}
    assert sum(s.requests for _, s in team_models) == sum(r.team_id == 1 for r in rows)
    assert rollups.usage_series("credential", 101, start, start + timedelta(hours=1))[0].bucket == start  # minutes


def test_latency_percentiles_from_the_histogram():
    # 10 requests in (0,100], 10 in (100,250]: the median is at the top of the first bucket.
    assert rollups.latency_percentile([10, 10] + [0] * 8, 0.5) == pytest.approx(100)
    assert rollups.latency_percentile([0] * 9 + [5], 0.95) == 60000  # only the open-ended bucket
    assert rollups.latency_percentile([0] * 10, 0.5) is None


def test_gen_usage_writes_rows_and_consistent_rollups():
    call_command("gen_usage", rows=3000, days=3, credentials=4, tokens=6, teams=2, models=3, seed=1)
    assert UsageRecord.objects.count() == 3000
    raw = UsageRecord.objects.aggregate(n=Sum("input_tokens"))["n"]
    for granularity in ("hour", "day"):
        sums = UsageRollup.objects.filter(granularity=granularity, dimension="all").aggregate(
            r=Sum("requests"), t=Sum("input_tokens"))
        assert (sums["r"], sums["t"]) == (3000, raw), granularity
    per_credential = UsageRollup.objects.filter(granularity="hour", dimension="credential").aggregate(r=Sum("requests"))
    assert per_credential["r"] == UsageRecord.objects.exclude(credential_id=None).count()
    state = RollupState.objects.get(name=rollup_writer.STATE_NAME)
    assert state.last_usage_id == UsageRecord.objects.order_by("-id").first().id
