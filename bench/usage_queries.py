"""Chart queries at volume (issue #7): with N generated usage rows (5 million by default), time the 30-day
per-credential chart query and the overview query. Not a test; `make bench` reports it.

    python -m bench.usage_queries --rows 5000000 [--repeats 20]

Uses its own database (the bench URL + `_queries`), filled once by `manage.py gen_usage` (COPY + rollups)
and reused by later runs while it holds at least N rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

TARGET_MS = 200.0


def measure(rows: int, repeats: int) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ds2api_site.settings")
    import django

    django.setup()
    from datetime import timedelta

    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from proxy import rollups, selectors
    from proxy.models import UsageRecord, UsageRollup

    started = time.monotonic()
    with connection.cursor() as cursor:  # the planner's estimate: counting 5M rows exactly takes seconds
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [UsageRecord._meta.db_table])
        estimate = cursor.fetchone()[0]
    if estimate < rows * 0.95:
        UsageRecord.objects.all().delete()
        UsageRollup.objects.all().delete()
        call_command("gen_usage", rows=rows, days=30, credentials=20, tokens=50, seed=7, stdout=sys.stderr)
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {UsageRecord._meta.db_table}")
            cursor.execute(f"VACUUM ANALYZE {UsageRollup._meta.db_table}")
    setup_s = round(time.monotonic() - started, 1)
    credential_key = UsageRollup.objects.filter(dimension="credential").values_list("key", flat=True).first()
    end = timezone.now()
    start = end - timedelta(days=30)
    queries = {
        "30-day per-credential chart": lambda: rollups.usage_series("credential", credential_key, start, end),
        "overview (24 h totals + series)": lambda: rollups.overview(),
        "30-day per-credential page data (rollups + raw tail)": lambda: selectors.usage_series(
            selectors.UsageQuery(start=start, end=end, credential_id=int(credential_key))),
    }
    results: dict = {"rows": rows, "setup_s": setup_s, "target_ms": TARGET_MS, "queries": {}}
    for name, run in queries.items():
        try:
            run()
        except TypeError as exc:  # a selector signature changed: report rather than fail the whole bench
            results["queries"][name] = {"error": str(exc)[:200]}
            continue
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1000)
        results["queries"][name] = {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    json.dump(measure(args.rows, args.repeats), sys.stdout)


if __name__ == "__main__":
    main()


def run_in_subprocess(env: dict, rows: int) -> dict:
    from bench.gateway_config import run_json_module

    return run_json_module("bench.usage_queries", ["--rows", str(rows)], env, "_queries")
