"""Celery tasks for credential health. Thin wrappers; the work lives in routing/health_probe.py."""

from django.conf import settings

from ds2api_site.jobs import background_task
from routing import health_probe


@background_task("ds2api.probe_credentials")
def probe_credentials() -> dict:
    """Fan out one probe per enabled credential (scheduled every DS2API_PROBE_INTERVAL_SECONDS).

    One task per credential: a slow or hanging provider delays only its own probes, and several workers
    share the load. A probe still queued when the next round is due is dropped, not run late.
    """
    ids = health_probe.probe_targets()
    for credential_id in ids:
        probe_credential.apply_async((credential_id,), expires=settings.DS2API_PROBE_INTERVAL_SECONDS)
    return {"queued": len(ids)}


@background_task("ds2api.probe_credential")
def probe_credential(credential_id: int) -> dict | None:
    """Probe one credential and record the verdict in its shared health state."""
    return health_probe.run_probe(credential_id)
