"""Monthly spend per token and per team, and the one cheap check the proxy makes before forwarding.

Spend lives in Redis counters `{REDIS_PREFIX}:spend:{token|team}:{id}:{YYYY-MM}` (calendar months in
UTC), in units of 1e-8 USD (the precision of `UsageRecord.cost_usd`) so additions are exact integers.
The usage writer adds each stored batch's cost; a missing counter (new month, Redis restarted) is
rebuilt from the sum of the month's usage rows. Counters expire an hour after they are built, so any
drift (say, a batch stored while Redis was unreachable) heals by itself.

The proxy reads the counters only for tokens that have a budget (their own or their team's): one MGET.
If Redis is unreachable the check lets requests through and logs, rather than failing every request.
"""

import asyncio
import logging
import weakref
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from proxy.canonical import GatewayError
from proxy.db import run_db
from proxy.models import UsageRecord
from routing.snapshot import TokenInfo

log = logging.getLogger(__name__)

UNITS = Decimal(100_000_000)  # counter units per USD
COUNTER_TTL = 3600
WARNING_FRACTION = Decimal("0.8")
KINDS = ("token", "team")

# Add to counters that exist; a missing one will be rebuilt from the database, which already holds
# the rows being added, so creating it here with only this batch would undercount.
_ADD_IF_PRESENT = """
for i, key in ipairs(KEYS) do
  if redis.call('exists', key) == 1 then redis.call('incrby', key, ARGV[i]) end
end
return 0
"""


def period_start(now: datetime | None = None) -> datetime:
    now = (now or timezone.now()).astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_period_start(now: datetime | None = None) -> datetime:
    start = period_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def counter_key(kind: str, object_id: int, now: datetime | None = None) -> str:
    return f"{settings.REDIS_PREFIX}:spend:{kind}:{object_id}:{period_start(now):%Y-%m}"


def to_units(usd: Decimal | float) -> int:
    return int(Decimal(str(usd)) * UNITS)


# --- the synchronous side: the usage writer thread, selectors, the dashboard -----------------------

_sync_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return _sync_client


def spent_in_database(kind: str, object_id: int, now: datetime | None = None) -> int:
    start = period_start(now)
    rows = UsageRecord.objects.filter(**{f"{kind}_id": object_id}, created_at__gte=start,
                                      created_at__lt=next_period_start(now))
    total = rows.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)
    return to_units(total)


def rebuild(kind: str, object_id: int, now: datetime | None = None) -> int:
    """Spend of the month from the usage rows, stored as the counter unless another process won."""
    value = spent_in_database(kind, object_id, now)
    key = counter_key(kind, object_id, now)
    try:
        client = _redis()
        if not client.set(key, value, nx=True, ex=COUNTER_TTL):
            current = client.get(key)
            value = int(current) if current is not None else value
    except redis.RedisError as exc:
        log.warning("spend counter %s not stored: %s", key, exc)
    return value


def spent_units(kind: str, object_id: int, now: datetime | None = None) -> int:
    try:
        value = _redis().get(counter_key(kind, object_id, now))
    except redis.RedisError:
        return spent_in_database(kind, object_id, now)
    return int(value) if value is not None else rebuild(kind, object_id, now)


def add_spend(rows: Iterable) -> None:
    """Add stored usage rows' cost to their token's and team's counters. Never raises for Redis."""
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        units = to_units(row.cost_usd or 0)
        if units <= 0:
            continue
        for kind in KINDS:
            object_id = getattr(row, f"{kind}_id")
            if object_id is not None:
                totals[counter_key(kind, object_id, row.created_at)] += units
    if not totals:
        return
    try:
        client = _redis()
        client.eval(_ADD_IF_PRESENT, len(totals), *totals.keys(), *totals.values())
    except redis.RedisError as exc:
        log.warning("spend counters not updated (%s); they are rebuilt from usage rows within the hour", exc)


@dataclass(frozen=True)
class BudgetStatus:
    budget_usd: Decimal | None
    spent_usd: Decimal
    resets_at: datetime

    @property
    def fraction(self) -> float | None:
        if self.budget_usd is None:
            return None
        return float(self.spent_usd / self.budget_usd) if self.budget_usd > 0 else 1.0

    @property
    def warning(self) -> bool:
        """80% of the budget is spent: the dashboard shows a warning."""
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd * WARNING_FRACTION

    @property
    def exceeded(self) -> bool:
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd


def status(kind: str, object_id: int, budget_usd: Decimal | None, now: datetime | None = None) -> BudgetStatus:
    spent = Decimal(spent_units(kind, object_id, now)) / UNITS
    return BudgetStatus(budget_usd, spent, next_period_start(now))


# --- the proxy side --------------------------------------------------------------------------------

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = weakref.WeakKeyDictionary()


def _async_redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        _async_clients[loop] = client
    return client


async def check(token: TokenInfo) -> None:
    """Refuse the request (429, budget_exceeded) if the token's or its team's monthly budget is spent."""
    limits = []
    if token.budget_usd is not None:
        limits.append(("token", token.id, token.budget_usd, f"token '{token.name}'"))
    if token.team.monthly_budget_usd is not None:
        limits.append(("team", token.team.id, token.team.monthly_budget_usd, f"team '{token.team.name}'"))
    if not limits:
        return
    now = timezone.now()
    try:
        values = await _async_redis().mget([counter_key(kind, object_id, now) for kind, object_id, _, _ in limits])
    except (aioredis.RedisError, OSError) as exc:
        log.warning("budget check skipped, Redis unavailable: %s", exc)
        return
    for (kind, object_id, budget, label), value in zip(limits, values, strict=True):
        spent = int(value) if value is not None else await run_db(rebuild, kind, object_id, now)
        if spent >= to_units(budget):
            raise GatewayError(
                "budget_exceeded",
                f"the monthly budget of {label} (${budget:.2f}) is spent; it resets on "
                f"{next_period_start(now):%Y-%m-%d} 00:00 UTC or when the budget is raised",
                code=f"{kind}_budget_exceeded",
            )
