"""Computing usage rollups: minute buckets from raw rows, hours from minutes, days from hours.

Every write replaces whole buckets (delete, then insert the recomputed sums, in one transaction), so
rolling the same window twice gives the same numbers, and re-rolling after late rows arrive corrects it.

`roll_up_pending()` is what the scheduled task runs. It finds what changed since the last run by id (raw
rows written since, whatever their timestamps: a gateway that buffered rows through a database outage
writes them late) plus a short trailing window of minutes (batches still committing, the current minute),
and rolls those minutes in chunks, so a worker that was down for a day simply catches up on its next run.
Buckets older than the retention horizon are never re-rolled: their raw rows or minute rollups may be
gone, and recomputing them would lose numbers instead of correcting them.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from proxy.models import LATENCY_BUCKETS_MS, Granularity, RollupState, UsageRecord

log = logging.getLogger(__name__)

STATE_NAME = "usage"
# Minutes before "now" re-rolled on every run: rows of batches that got an id before our last scan but
# committed after it, and the current, still-growing minute.
RECENT_MINUTES = 5
# A catch-up rolls at most this much time per transaction, so one never holds locks for long.
CHUNK = timedelta(hours=6)
# Arbitrary but fixed: only one rollup run at a time (beat overlap, a manual re-roll, a retry).
ADVISORY_LOCK_ID = 0x64733261_01

_HIST_COLUMNS = [f"lat_{bound}" for bound in LATENCY_BUCKETS_MS] + ["lat_inf"]
METRIC_COLUMNS = [
    "requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd",
    "latency_ms_sum", "ttfb_ms_sum", "ttfb_count", *_HIST_COLUMNS,
]
UNIT = {Granularity.MINUTE: "minute", Granularity.HOUR: "hour", Granularity.DAY: "day"}
STEP = {Granularity.MINUTE: timedelta(minutes=1), Granularity.HOUR: timedelta(hours=1), Granularity.DAY: timedelta(days=1)}
FINER = {Granularity.HOUR: Granularity.MINUTE, Granularity.DAY: Granularity.HOUR}


def _histogram_expressions() -> list[str]:
    exprs, lower = [], None
    for bound in LATENCY_BUCKETS_MS:
        low = f"u.latency_ms > {lower} AND " if lower is not None else ""
        exprs.append(f"count(*) FILTER (WHERE {low}u.latency_ms <= {bound})")
        lower = bound
    exprs.append(f"count(*) FILTER (WHERE u.latency_ms > {lower})")
    return exprs


_RAW_EXPRESSIONS = [
    "count(*)", "count(*) FILTER (WHERE u.status >= 400)", "sum(u.input_tokens)", "sum(u.output_tokens)",
    "sum(u.cached_tokens)", "sum(u.reasoning_tokens)", "sum(u.cost_usd)", "sum(u.latency_ms)",
    "coalesce(sum(u.ttfb_ms), 0)", "count(u.ttfb_ms)", *_histogram_expressions(),
]
_COLUMNS = ", ".join(["granularity", "bucket", "dimension", "key", *METRIC_COLUMNS])

# One scan of the raw rows feeds every dimension: each row is expanded into one (dimension, key) pair
# per dimension it has a value for. (Built only from the constants above: S608 does not apply.)
_FROM_RAW_SQL = f"""
INSERT INTO proxy_usagerollup ({_COLUMNS})
SELECT %(granularity)s, date_trunc(%(unit)s, u.created_at, 'UTC'), d.dimension, d.key, {", ".join(_RAW_EXPRESSIONS)}
FROM proxy_usagerecord u
CROSS JOIN LATERAL (VALUES
    ('all', ''),
    ('credential', u.credential_id::text),
    ('token', u.token_id::text),
    ('team', u.team_id::text),
    ('model', nullif(u.client_model, '')),
    ('team_model', u.team_id::text || ':' || nullif(u.client_model, ''))
) AS d(dimension, key)
WHERE u.created_at >= %(start)s AND u.created_at < %(end)s AND d.key IS NOT NULL
GROUP BY 2, 3, 4
"""  # noqa: S608

_FROM_FINER_SQL = f"""
INSERT INTO proxy_usagerollup ({_COLUMNS})
SELECT %(granularity)s, date_trunc(%(unit)s, r.bucket, 'UTC'), r.dimension, r.key,
       {", ".join(f"sum(r.{column})" for column in METRIC_COLUMNS)}
FROM proxy_usagerollup r
WHERE r.granularity = %(finer)s AND r.bucket >= %(start)s AND r.bucket < %(end)s
GROUP BY 2, 3, 4
"""  # noqa: S608

_DELETE_SQL = "DELETE FROM proxy_usagerollup WHERE granularity = %s AND bucket >= %s AND bucket < %s"


def floor_to(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC)
    if granularity == Granularity.MINUTE:
        return moment.replace(second=0, microsecond=0)
    if granularity == Granularity.HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_to(moment: datetime, granularity: str) -> datetime:
    floor = floor_to(moment, granularity)
    return floor if floor == moment else floor + STEP[granularity]


def rollable_since(now: datetime | None = None) -> datetime:
    """The oldest bucket start that may still be recomputed: both its raw rows and minute rollups exist.

    Day-aligned, like the retention cutoffs in proxy/retention.py, so a prune that ran a moment earlier
    can never have removed anything at or after it.
    """
    keep_days = min(settings.DS2API_USAGE_RETENTION_DAYS, settings.DS2API_MINUTE_ROLLUP_RETENTION_DAYS)
    return floor_to(now or timezone.now(), Granularity.DAY) - timedelta(days=keep_days)


def _replace(cursor, granularity: str, start: datetime, end: datetime, sql: str, **params) -> None:
    cursor.execute(_DELETE_SQL, [granularity, start, end])
    cursor.execute(sql, {"granularity": granularity, "unit": UNIT[granularity], "start": start, "end": end,
                         **params})


def roll_from_raw(granularity: str, start: datetime, end: datetime) -> None:
    """Recompute every `granularity` bucket in [start, end) (both aligned to it) from raw usage rows."""
    with transaction.atomic(), connection.cursor() as cursor:
        _replace(cursor, granularity, start, end, _FROM_RAW_SQL)


def roll_from_finer(granularity: str, start: datetime, end: datetime) -> None:
    """Recompute hour (or day) buckets in [start, end) by summing the minute (or hour) rollups inside them."""
    with transaction.atomic(), connection.cursor() as cursor:
        _replace(cursor, granularity, start, end, _FROM_FINER_SQL, finer=FINER[granularity])


def roll_window(start: datetime, end: datetime) -> None:
    """Recompute the minutes in [start, end) and every hour and day that contains one of them."""
    start, end = floor_to(start, Granularity.MINUTE), ceil_to(end, Granularity.MINUTE)
    with transaction.atomic():
        roll_from_raw(Granularity.MINUTE, start, end)
        roll_from_finer(Granularity.HOUR, floor_to(start, Granularity.HOUR), ceil_to(end, Granularity.HOUR))
        roll_from_finer(Granularity.DAY, floor_to(start, Granularity.DAY), ceil_to(end, Granularity.DAY))


@dataclass(frozen=True)
class RollupReport:
    ran: bool  # False: another run held the lock
    start: datetime | None = None
    end: datetime | None = None
    chunks: int = 0
    last_usage_id: int = 0

    def as_dict(self) -> dict:
        return {
            "ran": self.ran,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "chunks": self.chunks,
            "last_usage_id": self.last_usage_id,
        }


class _AdvisoryLock:
    """A session-level Postgres advisory lock, taken without waiting."""

    def __enter__(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_ID])
            self.held = bool(cursor.fetchone()[0])
        return self.held

    def __exit__(self, *exc) -> None:
        if self.held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_ID])


def roll_range(start: datetime, end: datetime, *, now: datetime | None = None) -> RollupReport:
    """Re-roll [start, end) in chunks (clamped to what may still be recomputed). For the task and tests."""
    with _AdvisoryLock() as held:
        if not held:
            return RollupReport(ran=False)
        return _roll_chunks(start, end, now or timezone.now())


def _roll_chunks(start: datetime, end: datetime, now: datetime) -> RollupReport:
    start = max(floor_to(start, Granularity.MINUTE), rollable_since(now))
    end = ceil_to(end, Granularity.MINUTE)
    chunks = 0
    cursor = start
    while cursor < end:
        # Chunk edges on whole hours, so each chunk's hour re-derivation sees only finished minutes.
        chunk_end = min(floor_to(cursor + CHUNK, Granularity.HOUR), end)
        if chunk_end <= cursor:
            chunk_end = min(cursor + CHUNK, end)
        roll_window(cursor, chunk_end)
        chunks += 1
        cursor = chunk_end
    return RollupReport(ran=True, start=start, end=end, chunks=chunks)


def roll_up_pending(now: datetime | None = None) -> RollupReport:
    """Roll up everything written since the last run, plus the last few minutes. Idempotent."""
    now = now or timezone.now()
    with _AdvisoryLock() as held:
        if not held:
            log.info("usage rollup skipped: another run is in progress")
            return RollupReport(ran=False)
        state, _ = RollupState.objects.get_or_create(name=STATE_NAME)
        fresh = UsageRecord.objects.filter(id__gt=state.last_usage_id).aggregate(first=Min("created_at"),
                                                                                  last_id=Max("id"))
        current_minute = floor_to(now, Granularity.MINUTE)
        start = current_minute - timedelta(minutes=RECENT_MINUTES)
        if fresh["first"] is not None:
            start = min(start, fresh["first"])
        report = _roll_chunks(start, current_minute + STEP[Granularity.MINUTE], now)
        state.last_usage_id = max(state.last_usage_id, fresh["last_id"] or 0)
        state.rolled_until = current_minute
        state.save(update_fields=["last_usage_id", "rolled_until", "updated_at"])
    if report.chunks > 1:
        log.info("usage rollup caught up %s .. %s in %d chunks", report.start, report.end, report.chunks)
    return RollupReport(True, report.start, report.end, report.chunks, state.last_usage_id)
