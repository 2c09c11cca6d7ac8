"""Scheduled health probes: the cheapest authenticated request each provider allows, and what it implies.

The dashboard's "test" button (routing/probes.py) sends a one-token generation, which proves the whole path
but costs tokens; a probe that runs every minute for every key should cost nothing. So the scheduled probe
lists the provider's models (free with OpenAI, Anthropic and Gemini, and it checks the key just the same)
and falls back to the one-token generation only where a host has no models endpoint.

The verdict goes through `routing.health.set_health`, so it lands where the proxy reads health (Redis,
shared by every replica), in the Credential row, and on the live dashboards. A credential that works again
leaves invalid or cooling down by itself; a transient failure (5xx, unreachable) only notes the error and
leaves the status to the proxy's own cooldowns, so one flaky probe never takes a working key out of rotation.
"""

import logging
import time

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from proxy.adapters import upstream_adapter
from proxy.adapters.anthropic_upstream import anthropic_headers, messages_url
from proxy.adapters.gemini_upstream import gemini_headers
from proxy.live_feed import publish_health
from routing import health, probes
from routing.keyring import KeyRingError
from routing.models import Credential, HealthStatus, ProviderKind
from routing.services import reveal_secret
from routing.validators import check_dialled_host, validate_base_url

log = logging.getLogger(__name__)

NO_MODELS_ENDPOINT = {404, 405, 501}
DEFAULT_COOLDOWN_SECONDS = 60.0


def _models_request(kind: str, base_url: str, secret: str, extra_headers: dict) -> tuple[str, dict[str, str]]:
    base = base_url.rstrip("/")
    if kind == ProviderKind.ANTHROPIC:
        return messages_url(base, "/v1/models"), anthropic_headers(secret, extra_headers)
    if kind == ProviderKind.GEMINI:
        for suffix in ("/v1beta", "/v1"):
            base = base.removesuffix(suffix)
        return f"{base}/v1beta/models", gemini_headers(secret, extra_headers)
    return f"{base}/models", {"authorization": f"Bearer {secret}", **extra_headers}


def probe_cheaply(credential: Credential, *, timeout: float = 15.0) -> probes.ProbeResult:
    """One free request with this credential (listing models); writes nothing."""
    provider = credential.provider
    adapter = upstream_adapter(provider.kind)
    if adapter.in_process:
        return probes.probe_credential(credential)
    try:
        secret = reveal_secret(credential)
        base_url = validate_base_url(provider.base_url)  # again: DNS may have changed since it was saved
        check_dialled_host(base_url)  # metadata, or private while not allowed, by what the name resolves to now
    except KeyRingError:
        return probes.ProbeResult(credential.pk, False, None, 0, "the stored key cannot be decrypted", "")
    except ValidationError as exc:
        return probes.ProbeResult(credential.pk, False, None, 0, "; ".join(exc.messages), "")
    url, headers = _models_request(provider.kind, base_url, secret, dict(provider.extra_headers or {}))
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    connect = provider.connect_timeout or settings.DS2API_CONNECT_TIMEOUT
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=connect), follow_redirects=False) as client:
            response = client.get(url, headers=headers)
    except httpx.TimeoutException:
        return probes.ProbeResult(credential.pk, False, None, int(timeout * 1000), "timed out", "")
    except httpx.HTTPError as exc:
        return probes.ProbeResult(credential.pk, False, None, 0, f"could not reach the provider: {type(exc).__name__}", "")
    elapsed = int((time.perf_counter() - started) * 1000)
    if response.status_code in NO_MODELS_ENDPOINT:
        return probes.probe_credential(credential, timeout=timeout)
    if response.status_code >= 400:
        err = adapter.parse_error(response.status_code, dict(response.headers), response.content)
        message = err.message.replace(secret, credential.masked)[:300]
        return probes.ProbeResult(credential.pk, False, response.status_code, elapsed, message, "", err.retry_after)
    return probes.ProbeResult(credential.pk, True, response.status_code, elapsed, "ok", "")


def apply_result(credential: Credential, result: probes.ProbeResult) -> str:
    """Turn a probe result into the credential's shared health. Returns the status it now has."""
    if result.ok:
        health.set_health(credential.pk, HealthStatus.OK)
        return HealthStatus.OK
    if result.status in (401, 403):
        health.set_health(credential.pk, HealthStatus.INVALID, error=result.message)
        return HealthStatus.INVALID
    if result.status == 429:
        health.set_health(credential.pk, HealthStatus.COOLING, error=result.message,
                          cooldown_seconds=result.retry_after or DEFAULT_COOLDOWN_SECONDS)
        return HealthStatus.COOLING
    Credential.objects.filter(pk=credential.pk).update(last_error=result.message[:500],
                                                        last_checked_at=timezone.now())
    return credential.health_status


def run_probe(credential_id: int) -> dict | None:
    """Probe one enabled credential and record the verdict; None if it is gone or disabled."""
    credential = (
        Credential.objects.select_related("provider")
        .filter(pk=credential_id, enabled=True, provider__enabled=True)
        .first()
    )
    if credential is None:
        return None
    result = probe_cheaply(credential)
    status = apply_result(credential, result)
    publish_health([credential.pk])  # the dashboard's tile shows the new status and "last checked"
    if status != credential.health_status:
        log.info("credential %s (id %s) is now %s: %s", credential.name, credential.pk, status, result.message)
    return {"credential_id": credential.pk, "status": status, "http_status": result.status,
            "latency_ms": result.latency_ms}


def probe_targets() -> list[int]:
    """Ids of every credential a scheduled probe should check."""
    return list(Credential.objects.filter(enabled=True, provider__enabled=True).order_by("pk")
                .values_list("pk", flat=True))
