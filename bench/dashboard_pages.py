"""Dashboard page render times with a large usage table (`make bench`; not a test).

    python -m bench.dashboard_pages --rows 1000000 [--repeats 10]

Fills its own database with `--rows` synthetic usage rows over 30 days (`manage.py gen_usage`: COPY, plus
rollups, as the scheduled task would have built them) naming real credentials and tokens, then renders each
dashboard page through Django's request stack (test client, no network) as a platform admin and as a team
member, and prints p50 / max milliseconds per page as JSON. The target is under 300 ms per page.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

TARGET_MS = 300.0


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ds2api_site.settings")
    import django

    django.setup()


def _fixtures(rows: int) -> dict:
    """Providers, keys, teams, tokens and users once; usage rows only when the table is not filled yet."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from accounts import services as account_services
    from accounts.models import Membership, Team
    from proxy.models import UsageRecord, UsageRollup
    from routing import services

    if not Team.objects.filter(name="bench-team-0").exists():
        # Never called: a loopback address keeps the SSRF guard's DNS lookup off the network.
        provider = services.save_provider("bench-openai", kind="openai", base_url="http://127.0.0.1:9/v1")
        for i in range(20):
            services.save_credential(provider, f"key-{i}", secret=f"sk-bench-dashboard-{i:04d}-xxxxxxxx")
        services.save_route("gen-model-*", [services.TargetSpec(provider)])
        for t in range(5):
            team = account_services.create_team(f"bench-team-{t}")
            for k in range(10):
                account_services.issue_token(team, f"token-{k}")
    users = get_user_model().objects
    admin = users.filter(username="bench-admin").first() or users.create_superuser("bench-admin", "", None)
    member = users.filter(username="bench-member").first() or users.create_user("bench-member")
    team = Team.objects.get(name="bench-team-0")
    Membership.objects.get_or_create(user=member, team=team, defaults={"role": "member"})
    if UsageRecord.objects.count() < rows:
        UsageRecord.objects.all().delete()
        UsageRollup.objects.all().delete()
        call_command("gen_usage", rows=rows, days=30, credentials=20, tokens=50, seed=1, stdout=sys.stderr)
    return {"admin": admin, "member": member, "team": team}


def _pages(team_id: int) -> dict[str, list[str]]:
    from proxy.models import UsageRecord
    from routing.models import Credential

    credential = Credential.objects.order_by("pk").first()
    some_row = UsageRecord.objects.order_by("-pk").values_list("pk", flat=True).first()
    return {
        "admin": [
            "/", "/usage/?range=1h", "/usage/?range=24h", "/usage/?range=7d", "/usage/?range=30d",
            "/usage/?range=30d&by=model", f"/usage/?range=30d&credential={credential.pk}",
            "/requests/", "/requests/?status=5xx", f"/requests/{some_row}/", "/providers/",
            f"/providers/{credential.provider_id}/", "/routes/", "/audit/",
        ],
        "member": ["/", f"/usage/?team={team_id}&range=30d", f"/usage/?team={team_id}&range=24h&by=token",
                   f"/requests/?team={team_id}", f"/teams/{team_id}/tokens/"],
    }


def measure(rows: int, repeats: int) -> dict:
    _setup_django()
    from django.test import Client

    from proxy.models import UsageRecord

    started = time.monotonic()
    users = _fixtures(rows)
    results: dict = {"rows": UsageRecord.objects.count(), "setup_s": round(time.monotonic() - started, 1),
                     "target_ms": TARGET_MS, "pages": {}}
    for who, paths in _pages(users["team"].pk).items():
        client = Client()
        client.force_login(users[who])
        for path in paths:
            for _ in range(2):  # warm caches and connections
                assert client.get(path).status_code == 200, path
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
            results["pages"][f"{who} {path}"] = {"p50_ms": round(statistics.median(times), 1),
                                                 "max_ms": round(max(times), 1)}
    slowest = max(results["pages"].values(), key=lambda p: p["p50_ms"])
    results["all_under_target"] = slowest["p50_ms"] < TARGET_MS
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    json.dump(measure(args.rows, args.repeats), sys.stdout)


if __name__ == "__main__":
    main()


def run_in_subprocess(env: dict, rows: int, repeats: int = 10) -> dict:
    """For `python -m bench`: measure in a fresh process against the bench's own dashboard database."""
    from bench.gateway_config import run_json_module

    return run_json_module("bench.dashboard_pages", ["--rows", str(rows), "--repeats", str(repeats)],
                           {**env, "DS2API_ALLOW_PRIVATE_UPSTREAMS": "1"}, "_dashboard")
