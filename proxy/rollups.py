"""Reading usage rollups: time series, totals and breakdowns for charts and tables.

Charts read these, never raw usage rows, so a 30-day chart costs one index range scan of ~720 rows
however much traffic there was. The granularity follows the range: minutes up to 6 hours, hours up to
35 days, days beyond. A range is widened to whole buckets of that granularity.

Dimensions and keys (see proxy.models.Dimension): ("all", "") for the whole gateway, ("credential", id),
("token", id), ("team", id), ("model", name), ("team_model", f"{team_id}:{name}"). Callers decide who may
see which key (a team's members: their team, its tokens, and its team_model keys).
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from proxy.models import LATENCY_BUCKETS_MS, Granularity, UsageRollup
from proxy.rollup_writer import METRIC_COLUMNS, STEP, floor_to

HIST_COLUMNS = [c for c in METRIC_COLUMNS if c.startswith("lat_")]


def latency_percentile(histogram: list[int], fraction: float) -> float | None:
    """The latency (ms) below which `fraction` of requests fell, interpolated inside its bucket."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = fraction * total
    seen, lower = 0, 0.0
    for count, upper in zip(histogram, LATENCY_BUCKETS_MS, strict=False):
        if count and seen + count >= rank:
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = float(upper)
    return lower  # in the open-ended top bucket: report its lower edge


@dataclass(frozen=True)
class UsageStats:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms_sum: int = 0
    ttfb_ms_sum: int = 0
    ttfb_count: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * len(HIST_COLUMNS))

    @classmethod
    def from_row(cls, row: dict) -> "UsageStats":
        return cls(
            **{c: row[c] or 0 for c in METRIC_COLUMNS if c not in HIST_COLUMNS},
            histogram=[row[c] or 0 for c in HIST_COLUMNS],
        )

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def avg_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.requests if self.requests else None

    @property
    def avg_ttfb_ms(self) -> float | None:
        return self.ttfb_ms_sum / self.ttfb_count if self.ttfb_count else None

    @property
    def p50_ms(self) -> float | None:
        return latency_percentile(self.histogram, 0.50)

    @property
    def p95_ms(self) -> float | None:
        return latency_percentile(self.histogram, 0.95)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests, "errors": self.errors, "error_rate": self.error_rate,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens, "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": str(self.cost_usd), "avg_latency_ms": self.avg_latency_ms, "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms, "avg_ttfb_ms": self.avg_ttfb_ms,
        }


@dataclass(frozen=True)
class UsagePoint:
    bucket: datetime
    stats: UsageStats

    def as_dict(self) -> dict:
        return {"bucket": self.bucket.isoformat(), **self.stats.as_dict()}


def granularity_for(start: datetime, end: datetime) -> str:
    span = end - start
    if span <= timedelta(hours=6):
        return Granularity.MINUTE
    if span <= timedelta(days=35):
        return Granularity.HOUR
    return Granularity.DAY


def _range(start: datetime, end: datetime, granularity: str | None) -> tuple[str, datetime, datetime]:
    granularity = granularity or granularity_for(start, end)
    return granularity, floor_to(start, granularity), end


def usage_series(
    dimension: str, key: object, start: datetime, end: datetime, *, granularity: str | None = None,
    fill: bool = True,
) -> list[UsagePoint]:
    """One point per bucket of [start, end) for one dimension key; empty buckets as zeros when `fill`."""
    granularity, first, end = _range(start, end, granularity)
    rows = (
        UsageRollup.objects.filter(dimension=dimension, key=str(key), granularity=granularity,
                                   bucket__gte=first, bucket__lt=end)
        .order_by("bucket")
        .values("bucket", *METRIC_COLUMNS)
    )
    points = {row["bucket"]: UsagePoint(row["bucket"], UsageStats.from_row(row)) for row in rows}
    if not fill:
        return list(points.values())
    step, out, cursor = STEP[granularity], [], first
    while cursor < end:
        out.append(points.get(cursor) or UsagePoint(cursor, UsageStats()))
        cursor += step
    return out


def _sums():
    return {c: Sum(c) for c in METRIC_COLUMNS}


def usage_totals(dimension: str, key: object, start: datetime, end: datetime, *,
                 granularity: str | None = None) -> UsageStats:
    """Everything in [start, end) for one dimension key, summed in the database."""
    granularity, first, end = _range(start, end, granularity)
    row = UsageRollup.objects.filter(
        dimension=dimension, key=str(key), granularity=granularity, bucket__gte=first, bucket__lt=end
    ).aggregate(**_sums())
    return UsageStats.from_row(row)


def usage_breakdown(
    dimension: str, start: datetime, end: datetime, *, keys: list[object] | None = None,
    key_prefix: str | None = None, granularity: str | None = None, limit: int | None = None,
) -> list[tuple[str, UsageStats]]:
    """Totals per key of one dimension over [start, end), busiest first (e.g. the per-credential table).

    `keys` restricts to those keys (a team's tokens); `key_prefix` to keys starting with it ("7:" for
    team 7's team_model keys).
    """
    granularity, first, end = _range(start, end, granularity)
    queryset = UsageRollup.objects.filter(dimension=dimension, granularity=granularity, bucket__gte=first,
                                          bucket__lt=end)
    if keys is not None:
        queryset = queryset.filter(key__in=[str(k) for k in keys])
    if key_prefix is not None:
        queryset = queryset.filter(key__startswith=key_prefix)
    rows = queryset.values("key").annotate(**_sums()).order_by("-requests", "key")
    if limit is not None:
        rows = rows[:limit]
    return [(row["key"], UsageStats.from_row(row)) for row in rows]


def overview(start: datetime | None = None, end: datetime | None = None) -> dict:
    """The whole gateway over [start, end) (default: the last 24 hours): totals and a series."""
    end = end or timezone.now()
    start = start or end - timedelta(hours=24)
    return {
        "totals": usage_totals("all", "", start, end),
        "series": usage_series("all", "", start, end),
    }
