"""Usage reads for the dashboard: time series, breakdowns and the request log, scoped to one query.

Charts read the rollups (`proxy.rollups`: minute/hour/day sums per credential, token, team, model) for
everything already rolled up, and aggregate only the raw rows written since (`RollupState.rolled_until`)
in SQL, so a 30-day chart over millions of rows costs one rollup range scan plus a short raw tail, and a
request made a second ago still shows. Until the rollup task has ever run, everything comes from raw rows.
Both paths produce the same columns (including the latency histogram), so percentiles agree.

Callers (views, the API) decide what a user may see and pass it as a `UsageQuery`.
"""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, Trunc

from proxy.models import LATENCY_BUCKETS_MS, Granularity, RollupState, UsageRecord, UsageRollup
from proxy.rollup_writer import METRIC_COLUMNS, STEP, UNIT, ceil_to, floor_to
from proxy.rollups import UsageStats, granularity_for

DIMENSION_COLUMNS = {"credential": "credential_id", "token": "token_id", "team": "team_id", "model": "client_model"}


@dataclass(frozen=True)
class UsageQuery:
    start: datetime | None  # None only for the request log: no time bound
    end: datetime | None
    team_id: int | None = None
    token_id: int | None = None
    credential_id: int | None = None
    model: str = ""
    team_ids: tuple[int, ...] | None = None  # None: every team (platform admin); else only these

    @property
    def granularity(self) -> str:
        return granularity_for(self.start, self.end)

    def rollup_key(self) -> tuple[str, str] | None:
        """The single rollup (dimension, key) that holds exactly these rows, if there is one."""
        if self.team_ids is not None and self.team_id is None:
            return None  # "all my teams" is not one rollup key; views pass a team for non-admins
        narrowed = {k for k in ("team_id", "token_id", "credential_id", "model") if getattr(self, k)}
        if narrowed == {"credential_id"}:
            return "credential", str(self.credential_id)
        if narrowed in ({"token_id"}, {"token_id", "team_id"}):
            return "token", str(self.token_id)  # a token belongs to one team: the team adds nothing
        if narrowed == {"team_id", "model"}:
            return "team_model", f"{self.team_id}:{self.model}"
        if narrowed == {"team_id"}:
            return "team", str(self.team_id)
        if narrowed == {"model"}:
            return "model", self.model
        if not narrowed:
            return "all", ""
        return None

    def raw_rows(self) -> QuerySet[UsageRecord]:
        rows = UsageRecord.objects.all()
        if self.start is not None:
            rows = rows.filter(created_at__gte=self.start)
        if self.end is not None:
            rows = rows.filter(created_at__lt=self.end)
        if self.team_ids is not None:
            rows = rows.filter(team_id__in=self.team_ids)
        for field, value in (("team_id", self.team_id), ("token_id", self.token_id),
                             ("credential_id", self.credential_id), ("client_model", self.model or None)):
            if value is not None:
                rows = rows.filter(**{field: value})
        return rows


def _raw_metrics() -> dict:
    """The rollup columns, computed from raw rows (same names, same histogram edges)."""
    metrics = {
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status__gte=400)),
        **{name: Coalesce(Sum(name), 0) for name in
           ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")},
        "cost_usd": Sum("cost_usd"),
        "latency_ms_sum": Coalesce(Sum("latency_ms"), 0),
        "ttfb_ms_sum": Coalesce(Sum("ttfb_ms"), 0),
        "ttfb_count": Count("ttfb_ms"),
    }
    lower = None
    for bound in LATENCY_BUCKETS_MS:
        band = Q(latency_ms__lte=bound) & (Q(latency_ms__gt=lower) if lower is not None else Q())
        metrics[f"lat_{bound}"] = Count("id", filter=band)
        lower = bound
    metrics["lat_inf"] = Count("id", filter=Q(latency_ms__gt=lower))
    return metrics


def _add(total: dict | None, row: dict) -> dict:
    if total is None:
        return {c: row.get(c) or 0 for c in METRIC_COLUMNS}
    for column in METRIC_COLUMNS:
        total[column] = (total[column] or 0) + (row.get(column) or 0)
    return total


def _rolled_until() -> datetime | None:
    return RollupState.objects.filter(name="usage").values_list("rolled_until", flat=True).first()


def _split(query: UsageQuery, granularity: str, use_rollups: bool) -> datetime:
    """Buckets before the returned moment come from rollups, the rest from raw rows."""
    first = floor_to(query.start, granularity)
    cutoff = _rolled_until() if use_rollups else None
    if cutoff is None:
        return first
    return min(max(floor_to(cutoff, granularity), first), query.end)


@dataclass(frozen=True)
class Point:
    bucket: datetime
    stats: UsageStats


def usage_series(query: UsageQuery) -> tuple[str, list[Point]]:
    """(granularity, one point per bucket of the range, empty buckets as zeros)."""
    granularity = query.granularity
    first = floor_to(query.start, granularity)
    key = query.rollup_key()
    split = _split(query, granularity, key is not None)
    buckets: dict[datetime, dict] = {}
    if key is not None and split > first:
        for row in UsageRollup.objects.filter(dimension=key[0], key=key[1], granularity=granularity,
                                              bucket__gte=first, bucket__lt=split).values("bucket", *METRIC_COLUMNS):
            buckets[row["bucket"]] = _add(buckets.get(row["bucket"]), row)
    raw = replace(query, start=max(split, query.start)) if split > first else query
    for row in (raw.raw_rows().annotate(bucket=Trunc("created_at", UNIT[granularity], tzinfo=UTC))
                .values("bucket").annotate(**_raw_metrics()).order_by()):
        buckets[row["bucket"]] = _add(buckets.get(row["bucket"]), row)
    points, cursor, step = [], first, STEP[granularity]
    while cursor < query.end:
        row = buckets.get(cursor)
        points.append(Point(cursor, UsageStats.from_row(row) if row else UsageStats()))
        cursor += step
    return granularity, points


def usage_totals(points: Iterable[Point]) -> UsageStats:
    total: dict | None = None
    for point in points:
        s = point.stats
        row = {c: getattr(s, c) for c in METRIC_COLUMNS if hasattr(s, c)}
        row.update(zip([c for c in METRIC_COLUMNS if c.startswith("lat_")], s.histogram, strict=True))
        total = _add(total, row)
    return UsageStats.from_row(total) if total else UsageStats()


def window_stats(query: UsageQuery) -> UsageStats:
    """Totals of a short, recent window straight from raw rows (the overview's last minute / five minutes)."""
    row = query.raw_rows().aggregate(**_raw_metrics())
    return UsageStats.from_row(row) if row["requests"] else UsageStats()


def usage_breakdown(query: UsageQuery, by: str, *, limit: int = 200) -> list[tuple[object, UsageStats]]:
    """Totals per credential / token / team / model over the query, busiest first."""
    column = DIMENSION_COLUMNS[by]
    own = query.rollup_key()
    if own is not None and own[0] == by:  # one credential "by credential": its own totals, from rollups
        stats = usage_totals(usage_series(query)[1])
        return [(own[1] if by == "model" else int(own[1]), stats)] if stats.requests else []
    granularity = query.granularity
    first = floor_to(query.start, granularity)
    # Rollups answer a breakdown only for the whole gateway, or one team's tokens or models.
    dimension, prefix = None, ""
    if query.rollup_key() == ("all", ""):
        dimension = by
    elif query.rollup_key() == ("team", str(query.team_id)) and by in ("token", "model"):
        dimension, prefix = ("token", "") if by == "token" else ("team_model", f"{query.team_id}:")
    split = _split(query, granularity, dimension is not None)
    totals: dict[object, dict] = {}
    if dimension is not None and split > first:
        token_keys = [str(t) for t in _team_token_ids(query.team_id)] if by == "token" and query.team_id else None
        for span_granularity, span_start, span_end in _spans(first, split, granularity):
            rows = UsageRollup.objects.filter(dimension=dimension, granularity=span_granularity,
                                              bucket__gte=span_start, bucket__lt=span_end)
            if token_keys is not None:
                rows = rows.filter(key__in=token_keys)
            if prefix:
                rows = rows.filter(key__startswith=prefix)
            for row in rows.values("key").annotate(**{c: Sum(c) for c in METRIC_COLUMNS}).order_by():
                key = row["key"][len(prefix):]
                key = key if by == "model" else int(key)
                totals[key] = _add(totals.get(key), row)
    raw = replace(query, start=max(split, query.start)) if split > first else query
    for row in raw.raw_rows().values(column).annotate(**_raw_metrics()).order_by():
        totals[row[column]] = _add(totals.get(row[column]), row)
    ranked = sorted(totals.items(), key=lambda item: (-item[1]["requests"], str(item[0])))
    return [(key, UsageStats.from_row(row)) for key, row in ranked[:limit] if key not in (None, "")]


def _spans(first: datetime, split: datetime, granularity: str) -> list[tuple[str, datetime, datetime]]:
    """[first, split) as the fewest rollup rows: whole days from day rollups, the ragged ends from hours.

    A 30-day breakdown then sums ~30 day rows per key instead of ~720 hour rows. One query per span:
    with a single bucket range each, Postgres reads them through the (granularity, bucket) index.
    """
    if granularity != Granularity.HOUR:
        return [(granularity, first, split)]
    day_start, day_end = ceil_to(first, Granularity.DAY), floor_to(split, Granularity.DAY)
    if day_end <= day_start:
        return [(granularity, first, split)]
    spans = [(Granularity.HOUR, first, day_start), (Granularity.DAY, day_start, day_end),
             (Granularity.HOUR, day_end, split)]
    return [span for span in spans if span[1] < span[2]]


def _team_token_ids(team_id: int) -> list[int]:
    from accounts.models import GatewayToken

    return list(GatewayToken.objects.filter(team_id=team_id).values_list("pk", flat=True))


# --- request log -----------------------------------------------------------------------------------

STATUS_CLASSES = {"2xx": (200, 299), "3xx": (300, 399), "4xx": (400, 499), "5xx": (500, 599)}


def request_log(query: UsageQuery, *, status: str = "", before_id: int | None = None,
                limit: int = 50) -> tuple[list[UsageRecord], int | None]:
    """Newest first, keyset-paginated by id (no OFFSET, no COUNT: fast on any table size).

    Returns the page and the id to pass as `before_id` for the next one (None on the last page).
    """
    rows = query.raw_rows()
    if status in STATUS_CLASSES:
        low, high = STATUS_CLASSES[status]
        rows = rows.filter(status__gte=low, status__lte=high)
    elif status.isdigit():
        rows = rows.filter(status=int(status))
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    page = list(rows.order_by("-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, (page[-1].pk if more and page else None)
