"""Celery tasks for accounts: budget periods and warnings, and key rotation with progress for the dashboard."""

from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts import budget_alerts
from ds2api_site.jobs import JobProgress, background_task
from routing import services as routing_services

ROTATION = JobProgress("rotate-keys")


@background_task("ds2api.reset_budget_periods")
def reset_budget_periods() -> dict:
    """Open the current monthly budget period (hourly, so a run missed at midnight catches up)."""
    return budget_alerts.start_period()


@background_task("ds2api.warn_budgets")
def warn_budgets() -> dict:
    """Warn once per period about every token or team past 80% of its monthly budget."""
    return {"warned": len(budget_alerts.warn())}


def start_key_rotation(actor=None) -> bool:
    """Queue a rotation unless one is queued or running. For the dashboard button; returns True if queued.

    Progress is read with `ROTATION.read()`: {"state": queued|running|done|failed, "done", "total", ...}.
    """
    if not ROTATION.claim(done=0, total=None, requested_at=timezone.now().isoformat()):
        return False
    rotate_keys.delay(getattr(actor, "pk", None))
    return True


@background_task("ds2api.rotate_keys")
def rotate_keys(actor_id: int | None = None) -> dict:
    """Re-encrypt every credential under the newest key, reporting progress. Resumable and idempotent."""
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    ROTATION.update(state="running", done=0, total=None, started_at=timezone.now().isoformat(), error="")
    try:
        changed = routing_services.rotate_keys(
            actor=actor, actor_label="" if actor else "task",
            progress=lambda done, total: ROTATION.update(done=done, total=total),
        )
    except Exception as exc:
        # Recorded for the dashboard, then re-raised: transient errors are retried, others fail the task.
        ROTATION.update(state="failed", error=type(exc).__name__, finished_at=timezone.now().isoformat())
        raise
    ROTATION.update(state="done", done=changed, total=changed, finished_at=timezone.now().isoformat())
    return {"rotated": changed}
