"""The benchmark report: machine and versions, figures, ratios, and the targets they are read against."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform


def environment() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("django", "uvicorn", "aiohttp", "orjson", "uvloop", "httptools"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "-"
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version()},
        "versions": versions,
    }


def _added(results: dict, section: str, metric: str, quantile: str, base: str, via: str) -> float | str:
    try:
        return round(results[section][via][metric][quantile] - results[section][base][metric][quantile], 3)
    except KeyError:
        return "n/a"


def _get(results: dict, *path: str):
    node = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return "n/a"
        node = node[key]
    return node


def markdown(r: dict) -> str:
    seq, stream, tp = r["sequential"], r["streaming"], r["throughput"]
    lines = [
        "# ds2api benchmark",
        "",
        f"{r['date']} · {r['machine']['cpus']} CPUs ({r['machine']['cpu']}) · Python {r['machine']['python']} · "
        + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        f"Gateway: {r['config'].get('server', 'uvicorn')}, {r['config']['workers']} workers, token auth + routing + limits + usage recording on. "
        "Upstream: the in-repo fake (tests/fakes), its own process.",
        "",
        "## Added latency (gateway minus direct, sequential, keep-alive)",
        "",
        "| path | direct p50 | gateway p50 | added p50 | direct p99 | gateway p99 | added p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, base, via in (("OpenAI → OpenAI", "direct", "gateway"),
                             ("OpenAI → Anthropic (converted)", "direct_anthropic", "gateway_anthropic")):
        lines.append(
            f"| {label} | {_get(seq, base, 'total', 'p50_ms')} ms | {_get(seq, via, 'total', 'p50_ms')} ms "
            f"| **{_added(r, 'sequential', 'total', 'p50_ms', base, via)} ms** | {_get(seq, base, 'total', 'p99_ms')} ms "
            f"| {_get(seq, via, 'total', 'p99_ms')} ms | **{_added(r, 'sequential', 'total', 'p99_ms', base, via)} ms** |")
    lines += ["", "## Streaming, 200 chunks (time to first byte / last byte, p50)", "",
              "| path | direct TTFB | gateway TTFB | added TTFB | direct last byte | gateway last byte | added last byte |",
              "|---|---|---|---|---|---|---|"]
    for label, base, via in (("OpenAI → OpenAI", "direct", "gateway"),
                             ("OpenAI → Anthropic (converted)", "direct_anthropic", "gateway_anthropic")):
        lines.append(
            f"| {label} | {_get(stream, base, 'ttfb', 'p50_ms')} ms | {_get(stream, via, 'ttfb', 'p50_ms')} ms "
            f"| **{_added(r, 'streaming', 'ttfb', 'p50_ms', base, via)} ms** | {_get(stream, base, 'total', 'p50_ms')} ms "
            f"| {_get(stream, via, 'total', 'p50_ms')} ms | **{_added(r, 'streaming', 'total', 'p50_ms', base, via)} ms** |")
    paced = r.get("streaming_paced", {})
    if paced and "error" not in paced:
        lines += ["", f"Paced ({r.get('pace_ms', 0.5)} ms between chunks), OpenAI → OpenAI: TTFB direct "
                  f"{_get(paced, 'direct', 'ttfb', 'p50_ms')} ms, gateway {_get(paced, 'gateway', 'ttfb', 'p50_ms')} ms, "
                  f"**added {_added(r, 'streaming_paced', 'ttfb', 'p50_ms', 'direct', 'gateway')} ms** (p99 added "
                  f"{_added(r, 'streaming_paced', 'ttfb', 'p99_ms', 'direct', 'gateway')} ms); last byte added "
                  f"{_added(r, 'streaming_paced', 'total', 'p50_ms', 'direct', 'gateway')} ms."]
    lines += ["", "## Throughput, 50 connections", "", "| path | requests/s | p50 | p99 | non-2xx |", "|---|---|---|---|---|"]
    for name, label in (("direct", "direct to fake (OpenAI)"), ("gateway", "through gateway (OpenAI → OpenAI)"),
                        ("direct_anthropic", "direct to fake (Anthropic)"),
                        ("gateway_anthropic", "through gateway (OpenAI → Anthropic)")):
        t = tp[name]
        if "error" in t:
            lines.append(f"| {label} | not measured: {t['error'][:80]} | | | |")
            continue
        lines.append(f"| {label} | **{t['requests_per_s']:.0f}** | {t['p50_ms']} ms | {t['p99_ms']} ms | {t['non_2xx']} |")
    lines += ["", "## Memory", "", f"Gateway RSS per worker at rest: {r['rss_at_rest_mb']} MB; peak under load: "
              f"{r['rss_under_load_mb']} MB.", ""]
    if "dashboard" in r:
        lines += _dashboard_section(r["dashboard"])
    if "usage_queries" in r:
        lines += _queries_section(r["usage_queries"])
    if "local" in r:
        lines += _local_section(r["local"])
    if "litellm" in r:
        lines += _litellm_section(r)
    if "load" in r:
        from bench.load import markdown_section

        lines += markdown_section(r["load"])
    lines += ["## Targets (issue #8)", "",
              "added p50 ≤ 1 ms, p99 ≤ 3 ms · added streaming TTFB ≤ 1 ms · ≥ 2,500 requests/s with 2 workers · "
              "RSS ≤ 150 MB per worker.", ""]
    return "\n".join(lines)


def _dashboard_section(d: dict) -> list[str]:
    if "error" in d:
        return ["## Dashboard pages", "", f"Not measured: {d['error']}", ""]
    lines = ["## Dashboard pages", "",
             f"{d['rows']:,} usage rows over 30 days (rollups built); Django test client, no network; "
             f"target < {d['target_ms']:.0f} ms per page.", "",
             "| who and page | p50 | max |", "|---|---|---|"]
    for page, t in d["pages"].items():
        lines.append(f"| {page} | {t['p50_ms']} ms | {t['max_ms']} ms |")
    return lines + [""]


def _litellm_section(r: dict) -> list[str]:
    lite = r["litellm"]
    if "error" in lite:
        return ["## LiteLLM", "", f"Not measured: {lite['error']}", ""]
    ours_rps = r["throughput"]["gateway"]["requests_per_s"]
    theirs_rps = lite["throughput"]["requests_per_s"]
    ours_added = _added(r, "sequential", "total", "p50_ms", "direct", "gateway")
    theirs_added = round(lite["sequential"]["total"]["p50_ms"] - r["sequential"]["direct"]["total"]["p50_ms"], 3)
    ours_ttfb = _added(r, "streaming", "ttfb", "p50_ms", "direct", "gateway")
    theirs_ttfb = round(lite["streaming"]["ttfb"]["p50_ms"] - r["streaming"]["direct"]["ttfb"]["p50_ms"], 3)
    return ["## Side by side with LiteLLM " + lite.get("version", ""), "",
            "| metric | ds2api | LiteLLM | ratio |", "|---|---|---|---|",
            f"| requests/s, 50 connections ({lite['workers']} workers each) | {ours_rps:.0f} | {theirs_rps:.0f} "
            f"| {ours_rps / max(theirs_rps, 1):.1f}× |",
            f"| added latency p50 | {ours_added} ms | {theirs_added} ms | {theirs_added / max(ours_added, 0.001):.1f}× |",
            f"| added streaming TTFB p50 | {ours_ttfb} ms | {theirs_ttfb} ms | |",
            f"| RSS per worker under load | {r['rss_under_load_mb']} MB | {lite['rss_under_load_mb']} MB | |", ""]


def _local_section(local: dict) -> list[str]:
    if "error" in local:
        return ["## Local model", "", f"Not measured: {local['error']}", ""]
    d, g = local["direct"], local["gateway"]

    def fmt(value, scale=1.0, unit=""):
        return f"{value * scale:.1f}{unit}" if isinstance(value, int | float) else "n/a"

    return [f"## Local model ({local['model']}, {local['max_new_tokens']} new tokens, median)", "",
            "| | direct transformers | through the gateway |", "|---|---|---|",
            f"| time to first token | {fmt(d['ttft_s'], 1000, ' ms')} | {fmt(g['ttft_s'], 1000, ' ms')} |",
            f"| tokens/s | {fmt(d['tokens_per_s'])} | {fmt(g['tokens_per_s'])} |", ""]


def _queries_section(q: dict) -> list[str]:
    if "error" in q:
        return ["## Chart queries at volume", "", f"Not measured: {q['error']}", ""]
    lines = [f"## Chart queries with {q['rows']:,} usage rows (target < {q['target_ms']:.0f} ms)", "",
             "| query | p50 | max |", "|---|---|---|"]
    for name, t in q["queries"].items():
        if "error" in t:
            lines.append(f"| {name} | not measured: {t['error'][:80]} | |")
        else:
            lines.append(f"| {name} | {t['p50_ms']} ms | {t['max_ms']} ms |")
    return lines + [""]
