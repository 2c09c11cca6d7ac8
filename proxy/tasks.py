"""Celery tasks for usage: rollups and retention. Thin wrappers; the work lives in rollup_writer/retention."""

from datetime import datetime

from ds2api_site.jobs import background_task
from proxy import retention, rollup_writer


@background_task("ds2api.roll_up_usage")
def roll_up_usage() -> dict:
    """Roll up everything written since the last run (scheduled every DS2API_ROLLUP_INTERVAL_SECONDS)."""
    return rollup_writer.roll_up_pending().as_dict()


@background_task("ds2api.reroll_usage")
def reroll_usage(start: str, end: str) -> dict:
    """Recompute the rollups of [start, end) (ISO 8601 times), e.g. after importing rows by hand."""
    return rollup_writer.roll_range(datetime.fromisoformat(start), datetime.fromisoformat(end)).as_dict()


@background_task("ds2api.prune_usage")
def prune_usage() -> dict:
    """Delete raw rows, minute rollups and stored bodies past their retention age (hourly)."""
    return retention.prune().as_dict()
