"""Usage pages: charts (requests, tokens, cost, error rate, latency) with a table and CSV under each.

What a user sees is decided by `proxy.forms` (their teams, or everything for a platform admin); the
numbers come from `proxy.selectors`, aggregated in SQL and from rollups, never by loading rows here.
"""

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from accounts.csv_export import csv_response
from accounts.page_access import access_for
from accounts.selectors import teams_for, usage_labels
from proxy.forms import BREAKDOWNS, RANGES, UsageFilterForm
from proxy.selectors import Point, UsageQuery, usage_breakdown, usage_series, usage_totals


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    columns: tuple[tuple[str, str], ...]  # (key in the row dict, column header)


METRICS = (
    Metric("requests", "Requests", (("requests", "requests"), ("errors", "errors"))),
    Metric("tokens", "Tokens", (("input_tokens", "input"), ("output_tokens", "output"),
                                ("cached_tokens", "cached"), ("reasoning_tokens", "reasoning"))),
    Metric("cost", "Cost (USD)", (("cost_usd", "cost USD"),)),
    Metric("errors", "Error rate (%)", (("error_pct", "error %"),)),
    Metric("latency", "Latency (ms)", (("p50_ms", "p50"), ("p95_ms", "p95"), ("avg_latency_ms", "average"))),
)
METRICS_BY_NAME = {m.name: m for m in METRICS}


def _round(value):
    return round(value, 1) if isinstance(value, float) else value


def _row(stats) -> dict:
    return {
        "requests": stats.requests, "errors": stats.errors, "error_pct": round(stats.error_rate * 100, 2),
        "input_tokens": stats.input_tokens, "output_tokens": stats.output_tokens,
        "cached_tokens": stats.cached_tokens, "reasoning_tokens": stats.reasoning_tokens,
        "cost_usd": float(stats.cost_usd or 0), "p50_ms": _round(stats.p50_ms), "p95_ms": _round(stats.p95_ms),
        "avg_latency_ms": _round(stats.avg_latency_ms),
    }


def _label(bucket, granularity: str) -> str:
    return bucket.strftime({"minute": "%m-%d %H:%M", "hour": "%m-%d %H:00", "day": "%Y-%m-%d"}[granularity])


def _series_rows(points: list[Point], granularity: str) -> list[dict]:
    return [{"bucket": p.bucket, "label": _label(p.bucket, granularity), **_row(p.stats)} for p in points]


def _breakdown_rows(query: UsageQuery, by: str) -> list[dict]:
    ranked = usage_breakdown(query, by)
    labels = usage_labels(by, [key for key, _ in ranked])
    return [{"key": key, "label": labels.get(key, str(key)), **_row(stats)} for key, stats in ranked]


def _filter_links(request: HttpRequest, form: UsageFilterForm) -> list[dict]:
    params = request.GET.copy()
    params.pop("start", None), params.pop("end", None)
    links = []
    for name in RANGES:
        params["range"] = name
        links.append({"name": name, "url": f"?{params.urlencode()}", "current": form.range_name == name})
    return links


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    form = UsageFilterForm(request.GET, user=request.user)
    query = form.to_query()
    granularity, points = usage_series(query)
    series = _series_rows(points, granularity)
    by = form.breakdown
    chart_data = {
        "labels": [row["label"] for row in series],
        "series": {key: [row[key] for row in series]
                   for key in ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens",
                               "reasoning_tokens", "cost_usd", "error_pct", "p50_ms", "p95_ms", "avg_latency_ms")},
    }
    access = access_for(request.user)
    context = {
        "form": form,
        "query": query,
        "totals": _row(usage_totals(points)),
        "series": series,
        "chart_data": chart_data,
        "metrics": METRICS,
        "granularity": granularity,
        "range_links": _filter_links(request, form),
        "breakdown": _breakdown_rows(query, by),
        "by": by,
        "breakdowns": [b for b in BREAKDOWNS if b != "credential" or access.is_platform_admin],
        "teams": teams_for(request.user),
        "export_url": reverse("proxy:usage_csv") + "?" + request.GET.urlencode(),
        "subject": _subject(query),
    }
    return render(request, "proxy/usage.html", context)


def _subject(query: UsageQuery) -> str:
    parts = []
    for by, key in (("team", query.team_id), ("token", query.token_id), ("credential", query.credential_id)):
        if key is not None:
            parts.append(f"{by} {usage_labels(by, [key]).get(key, key)}")
    if query.model:
        parts.append(f"model {query.model}")
    return ", ".join(parts) or "all traffic you can see"


@login_required
def usage_csv(request: HttpRequest) -> HttpResponse:
    """One chart's table (`metric=requests|tokens|cost|errors|latency`) or the breakdown (`metric=breakdown`)."""
    form = UsageFilterForm(request.GET, user=request.user)
    query = form.to_query()
    metric = request.GET.get("metric", "requests")
    if metric == "breakdown":
        by = form.breakdown
        columns = [c for m in METRICS for c in m.columns]
        return csv_response(f"usage-by-{by}.csv", [by, "id", *[header for _, header in columns]],
                            ([row["label"], row["key"], *[row[key] for key, _ in columns]]
                             for row in _breakdown_rows(query, by)))
    chosen = METRICS_BY_NAME.get(metric, METRICS[0])
    granularity, points = usage_series(query)
    return csv_response(f"usage-{chosen.name}.csv", ["bucket_start_utc", *[header for _, header in chosen.columns]],
                        ([row["bucket"].isoformat(), *[row[key] for key, _ in chosen.columns]]
                         for row in _series_rows(points, granularity)))
