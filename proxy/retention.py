"""Retention: raw usage rows, minute rollups and stored bodies are deleted after their configured age.

Hour and day rollups are kept, so long-range charts survive the pruning of the rows they came from. Raw
rows are never deleted before the rollups have seen them (a worker that was down keeps them until it has
caught up). Cutoffs are whole UTC days, matching `rollup_writer.rollable_since`.

Any other model holding data with a shelf life (e.g. stored request/response bodies) opts in by declaring
`retention_days_setting = "DS2API_..._DAYS"` (the settings name of its age limit) and, if its timestamp
field is not `created_at`, `retention_field`. This module finds and prunes it; nothing else to wire.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db.models import Model, QuerySet
from django.utils import timezone

from proxy.models import Granularity, RollupState, UsageRecord, UsageRollup
from proxy.rollup_writer import STATE_NAME, floor_to

log = logging.getLogger(__name__)

BATCH = 10_000  # rows per DELETE: short transactions, no long lock on a busy table


@dataclass
class PruneReport:
    deleted: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.deleted)


def _delete_in_batches(queryset: QuerySet) -> int:
    total = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return total
        deleted, _ = queryset.model.objects.filter(pk__in=ids).delete()
        total += deleted
        if len(ids) < BATCH:
            return total


def _usage_cutoff(today: datetime) -> datetime | None:
    state = RollupState.objects.filter(name=STATE_NAME).first()
    if state is None or state.rolled_until is None:
        return None  # rollups never ran: every raw row is still the only copy of its numbers
    return min(today - timedelta(days=settings.DS2API_USAGE_RETENTION_DAYS), state.rolled_until)


def _opted_in_models() -> list[type[Model]]:
    return [m for m in apps.get_models() if getattr(m, "retention_days_setting", None)]


def prune(now: datetime | None = None) -> PruneReport:
    """Delete everything past its retention age. Idempotent; safe to run at any time."""
    today = floor_to(now or timezone.now(), Granularity.DAY)
    report = PruneReport()
    cutoff = _usage_cutoff(today)
    if cutoff is not None:
        report.deleted["usage_rows"] = _delete_in_batches(UsageRecord.objects.filter(created_at__lt=cutoff))
    minute_cutoff = today - timedelta(days=settings.DS2API_MINUTE_ROLLUP_RETENTION_DAYS)
    report.deleted["minute_rollups"] = _delete_in_batches(
        UsageRollup.objects.filter(granularity=Granularity.MINUTE, bucket__lt=minute_cutoff)
    )
    for model in _opted_in_models():
        days = getattr(settings, model.retention_days_setting)
        field_name = getattr(model, "retention_field", "created_at")
        queryset = model.objects.filter(**{f"{field_name}__lt": today - timedelta(days=days)})
        report.deleted[model._meta.label_lower] = _delete_in_batches(queryset)
    if any(report.deleted.values()):
        log.info("retention pruned %s", report.deleted)
    return report
