"""Probing a credential: one real, minimal generation call through the adapter registry.

Used by the dashboard's "test" / "test all" buttons (the scheduled probe in `routing.health_probe` lists
models first, which is free, and falls back to this). A probe asks for a single output token, so it costs
next to nothing but exercises exactly what the proxy does: the provider's URL, headers, auth scheme and the
adapter's request/response/error parsing. Its outcome updates the credential's shared health (ok / invalid
key / cooling down) and is pushed to live dashboards.

A probe result never contains the secret: provider error messages sometimes echo the key they rejected,
so every message is scrubbed before it is stored or shown.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError

from proxy.adapters import upstream_adapter
from proxy.canonical import CanonicalRequest, GatewayError, Message, TextPart
from routing.keyring import KeyRingError
from routing.models import Credential, Provider, RouteTarget
from routing.services import reveal_secret
from routing.validators import check_dialled_host, validate_base_url

DEFAULT_PROBE_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "gemini": "gemini-2.0-flash",
}
PROBE_WORKERS = 8


@dataclass(frozen=True)
class ProbeResult:
    credential_id: int
    ok: bool
    status: int | None  # the provider's HTTP status; None when it could not be reached
    latency_ms: int
    message: str
    model: str
    retry_after: float | None = None


def probe_model(provider: Provider) -> str:
    """The model a probe asks for: the provider's `probe_model` option, else one a route sends it."""
    configured = (provider.options or {}).get("probe_model")
    if isinstance(configured, str) and configured:
        return configured
    for target in RouteTarget.objects.filter(provider=provider).select_related("route").order_by("order", "id"):
        if target.upstream_model:
            return target.upstream_model
        if not any(ch in target.route.model for ch in "*?["):
            return target.route.model
    return DEFAULT_PROBE_MODELS.get(provider.kind, "")


def _scrub(message: str, secret: str, masked: str) -> str:
    message = message.replace(secret, masked) if secret else message
    return message[:300]


def _local_status(credential: Credential, model: str, started: float) -> ProbeResult:
    """An in-process model has no account to test: it is usable when its options hold (the model files are
    there and the `local` extra is installed); whether this process has it loaded is reported, not judged."""
    from proxy.local_models import status as local_status
    from proxy.local_models.options import LocalOptions, LocalOptionsError

    elapsed = lambda: int((time.perf_counter() - started) * 1000)  # noqa: E731
    try:
        LocalOptions.parse(credential.provider.options)
    except LocalOptionsError as exc:
        return ProbeResult(credential.pk, False, None, elapsed(), str(exc), model)
    state = local_status(credential.provider_id)
    text = "loaded" if state.get("loaded") else "not loaded yet (loads on the first request)"
    return ProbeResult(credential.pk, True, None, elapsed(), text, model)


def probe_credential(credential: Credential, *, model: str | None = None, timeout: float = 15.0) -> ProbeResult:
    """Call the provider once with this credential. Does not write anything (see `record_probe`)."""
    provider = credential.provider
    model = model or probe_model(provider)
    started = time.perf_counter()
    adapter = upstream_adapter(provider.kind)
    if adapter.in_process:
        return _local_status(credential, model, started)
    try:
        secret = reveal_secret(credential)
    except KeyRingError:
        return ProbeResult(credential.pk, False, None, 0, "the stored key cannot be decrypted with the key ring", model)
    request = CanonicalRequest(model=model, messages=[Message("user", [TextPart("ping")])], max_tokens=1)
    try:
        base_url = validate_base_url(provider.base_url)  # again: DNS may have changed since it was saved
        check_dialled_host(base_url)  # metadata, or private while not allowed, by what the name resolves to now
        upstream = adapter.build_request(request, upstream_model=model, base_url=base_url.rstrip("/"),
                                         secret=secret, extra_headers=dict(provider.extra_headers or {}))
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=provider.connect_timeout or
                                                settings.DS2API_CONNECT_TIMEOUT),
                          follow_redirects=False) as client:
            response = client.post(upstream.url, content=upstream.body, headers=upstream.headers)
    except ValidationError as exc:
        return ProbeResult(credential.pk, False, None, 0, "; ".join(exc.messages), model)
    except httpx.TimeoutException:
        return ProbeResult(credential.pk, False, None, int(timeout * 1000), "timed out", model)
    except httpx.HTTPError as exc:
        return ProbeResult(credential.pk, False, None, 0, f"could not reach the provider: {type(exc).__name__}", model)
    elapsed = int((time.perf_counter() - started) * 1000)
    if response.status_code >= 400:
        err = adapter.parse_error(response.status_code, dict(response.headers), response.content)
        return ProbeResult(credential.pk, False, response.status_code, elapsed,
                           _scrub(err.message, secret, credential.masked), model, err.retry_after)
    try:
        adapter.parse_response(response.content, request)
    except GatewayError as err:
        return ProbeResult(credential.pk, False, response.status_code, elapsed,
                           _scrub(f"unreadable answer: {err.message}", secret, credential.masked), model)
    return ProbeResult(credential.pk, True, response.status_code, elapsed, "ok", model)


def record_probe(credential: Credential, result: ProbeResult) -> None:
    """Store what a probe learned (the same verdict rules as the scheduled probe) and tell live dashboards."""
    from proxy.live_feed import publish_health
    from routing.health_probe import apply_result  # imports this module: a late import breaks the cycle

    apply_result(credential, result)
    publish_health([credential.pk])


def probe_and_record(credentials: list[Credential]) -> list[ProbeResult]:
    """Probe several credentials concurrently (network only in the threads), then record each result."""
    if not credentials:
        return []
    # Models are looked up here, not in the worker threads, which must not open database connections.
    models = {c.provider_id: probe_model(c.provider) for c in credentials}
    with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(credentials))) as pool:
        results = list(pool.map(lambda c: probe_credential(c, model=models[c.provider_id]), credentials))
    for credential, result in zip(credentials, results, strict=True):
        record_probe(credential, result)
    return results
