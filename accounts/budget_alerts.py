"""Scheduled budget work: opening each monthly period, and the 80% warnings.

Spend and enforcement live in accounts/budgets.py: counters are keyed by calendar month, so a new period
starts from zero by itself. What the schedule adds is (1) seeding the new month's counters for every
budget, so the proxy's first check of the month finds them in Redis instead of summing usage rows, with
one audit event marking the period, and (2) one "budget.warning" audit event per token or team and period
once 80% is spent, logged for operators (the dashboard shows the warning from `budgets.status` live).
Both are idempotent: audit events already written for the period are never written twice.
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import models, transaction
from django.utils import timezone

from accounts import audit, budgets
from accounts.models import AuditEvent, GatewayToken, Team

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budgeted:
    kind: str  # "token" or "team"
    target: models.Model
    team: Team
    budget_usd: Decimal


def budgeted(now: datetime | None = None) -> list[Budgeted]:
    now = now or timezone.now()
    teams = [Budgeted("team", t, t, t.monthly_budget_usd) for t in Team.objects.exclude(monthly_budget_usd=None)]
    tokens = GatewayToken.objects.exclude(budget_usd=None).filter(revoked_at=None).exclude(expires_at__lte=now)
    return teams + [Budgeted("token", t, t.team, t.budget_usd) for t in tokens.select_related("team")]


def _period(now: datetime) -> str:
    return f"{budgets.period_start(now):%Y-%m}"


def start_period(now: datetime | None = None) -> dict:
    """Seed this month's spend counters and mark the period in the audit log (once)."""
    now = now or timezone.now()
    period = _period(now)
    items = budgeted(now)
    for item in items:
        budgets.rebuild(item.kind, item.target.pk, now)  # keeps an existing counter as it is
    with transaction.atomic():
        marked = AuditEvent.objects.select_for_update().filter(action="budget.period_start",
                                                               details__period=period).exists()
        if not marked:
            audit.record("budget.period_start", actor_label="system",
                         details={"period": period, "budgets": len(items)})
    return {"period": period, "budgets": len(items), "new": not marked}


def warn(now: datetime | None = None) -> list[dict]:
    """Write one warning per token or team that has spent 80% of this month's budget. Returns the new ones."""
    now = now or timezone.now()
    period = _period(now)
    warned = []
    for item in budgeted(now):
        status = budgets.status(item.kind, item.target.pk, item.budget_usd, now)
        if not status.warning:
            continue
        already = AuditEvent.objects.filter(action="budget.warning", target_type=item.target._meta.model_name,
                                            target_id=str(item.target.pk), details__period=period).exists()
        if already:
            continue
        details = {"period": period, "kind": item.kind, "spent_usd": f"{status.spent_usd:.2f}",
                   "budget_usd": f"{item.budget_usd:.2f}", "fraction": round(status.fraction or 0, 3)}
        audit.record("budget.warning", item.target, actor_label="system", team=item.team, details=details)
        log.warning("%s %s (id %s) has spent %s of its %s monthly budget", item.kind, item.target,
                    item.target.pk, details["spent_usd"], details["budget_usd"])
        warned.append({"kind": item.kind, "id": item.target.pk, **details})
    return warned
