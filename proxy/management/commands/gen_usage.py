"""Generate synthetic usage rows (COPY, fast) and their rollups, for benchmarks and dashboard demos.

    manage.py gen_usage --rows 5000000 --days 30

Rows are spread evenly over the last `--days` days with realistic mixes of statuses, latencies and tokens.
They name existing credentials and tokens when there are some (so the dashboard shows them), else
synthetic ids. Rollups are then built for the whole range: hours from raw rows a day at a time, days from
hours, minutes only within the minute-rollup retention. The rollup watermark is moved past the new rows so
the scheduled task does not redo the work.
"""

import io
import random
import time
from datetime import datetime, timedelta

from django.core.management.base import BaseCommand
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from accounts.models import GatewayToken
from proxy.models import Granularity, RollupState, UsageRecord
from proxy.rollup_writer import STATE_NAME, ceil_to, floor_to, roll_from_finer, roll_from_raw, rollable_since
from routing.models import Credential

COLUMNS = (
    "created_at", "request_id", "token_id", "team_id", "route_id", "credential_id", "provider_id", "client_protocol",
    "upstream_kind", "client_model", "upstream_model", "status", "input_tokens", "output_tokens", "cached_tokens",
    "reasoning_tokens", "estimated", "cost_usd", "latency_ms", "ttfb_ms", "streamed", "attempts", "error_type",
)
CHUNK_ROWS = 50_000


class Command(BaseCommand):
    help = "Bulk-insert N synthetic usage rows over the last D days (COPY) and build their rollups."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rows", type=int, default=100_000)
        parser.add_argument("--days", type=float, default=30.0)
        parser.add_argument("--credentials", type=int, default=20)
        parser.add_argument("--tokens", type=int, default=50)
        parser.add_argument("--teams", type=int, default=5)
        parser.add_argument("--models", type=int, default=8)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--no-rollups", action="store_true", help="only insert raw rows")

    def handle(self, *args, rows: int, days: float, credentials: int, tokens: int, teams: int, models: int,
               seed: int | None, no_rollups: bool, **options) -> None:
        rng = random.Random(seed)
        now = timezone.now()
        start = now - timedelta(days=days)
        started = time.monotonic()
        self._copy_rows(rng, rows, start, now, _credentials(credentials), _tokens(tokens, teams), models)
        self.stdout.write(f"inserted {rows} usage rows in {time.monotonic() - started:.1f}s")
        if not no_rollups:
            started = time.monotonic()
            build_rollups(start, now)
            self.stdout.write(f"built rollups in {time.monotonic() - started:.1f}s")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE proxy_usagerecord")
            cursor.execute("ANALYZE proxy_usagerollup")

    def _copy_rows(self, rng: random.Random, count: int, start: datetime, end: datetime,
                   credentials: list[tuple[int, int]], tokens: list[tuple[int, int]], models: int) -> None:
        span = (end - start).total_seconds()
        model_names = [f"gen-model-{i}" for i in range(models)]
        prices = {name: (i + 1) * 1e-7 for i, name in enumerate(model_names)}  # USD per token
        sql = f"COPY proxy_usagerecord ({', '.join(COLUMNS)}) FROM STDIN"
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            buffer = io.StringIO()
            for i in range(count):
                at = start + timedelta(seconds=(i + rng.random()) * span / count)  # sorted: ids follow time
                credential_id, provider_id = rng.choice(credentials)
                token_id, team_id = rng.choice(tokens)
                model = rng.choice(model_names)
                roll = rng.random()
                status = 200 if roll < 0.95 else (429 if roll < 0.98 else 500)
                ok = status == 200
                input_tokens = rng.randint(10, 4000)
                output_tokens = rng.randint(1, 1500) if ok else 0
                cached = rng.randint(0, input_tokens // 2) if rng.random() < 0.3 else 0
                reasoning = rng.randint(0, output_tokens // 3) if rng.random() < 0.2 else 0
                streamed = rng.random() < 0.5
                latency = int(rng.lognormvariate(6.5, 0.9))
                ttfb = str(max(1, latency // rng.randint(3, 10))) if streamed and ok else "\\N"
                cost = (input_tokens + output_tokens) * prices[model]
                buffer.write(
                    f"{at.isoformat()}\tgen{i}\t{token_id}\t{team_id}\t\\N\t{credential_id}\t{provider_id}\t"
                    f"openai_chat\topenai\t{model}\t{model}\t{status}\t{input_tokens}\t{output_tokens}\t{cached}\t"
                    f"{reasoning}\tf\t{cost:.8f}\t{latency}\t{ttfb}\t{'t' if streamed else 'f'}\t1\t"
                    f"{'' if ok else ('rate_limit' if status == 429 else 'upstream')}\n"
                )
                if (i + 1) % CHUNK_ROWS == 0:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())


def _credentials(count: int) -> list[tuple[int, int]]:
    existing = list(Credential.objects.values_list("id", "provider_id")[:count])
    return existing or [(i, 1 + i % 3) for i in range(1, count + 1)]


def _tokens(count: int, teams: int) -> list[tuple[int, int]]:
    existing = list(GatewayToken.objects.values_list("id", "team_id")[:count])
    return existing or [(i, 1 + i % max(teams, 1)) for i in range(1, count + 1)]


def build_rollups(start: datetime, end: datetime) -> None:
    """Rollups for rows in [start, end): hours straight from raw rows (a day per statement), then the rest."""
    first_day, last = floor_to(start, Granularity.DAY), ceil_to(end, Granularity.HOUR)
    day = first_day
    while day < last:
        roll_from_raw(Granularity.HOUR, day, min(day + timedelta(days=1), last))
        day += timedelta(days=1)
    roll_from_finer(Granularity.DAY, first_day, ceil_to(end, Granularity.DAY))
    cursor = max(floor_to(start, Granularity.MINUTE), rollable_since(end))
    last_minute = ceil_to(end, Granularity.MINUTE)
    while cursor < last_minute:
        roll_from_raw(Granularity.MINUTE, cursor, min(cursor + timedelta(hours=6), last_minute))
        cursor += timedelta(hours=6)
    last_id = UsageRecord.objects.aggregate(last=Max("id"))["last"] or 0
    RollupState.objects.update_or_create(
        name=STATE_NAME, defaults={"last_usage_id": last_id, "rolled_until": floor_to(end, Granularity.MINUTE)}
    )

