"""Prometheus metrics: recorded cheaply per request, served as text on GET /metrics (protected).

Per request the pipeline calls `observe_request(...)` once, when it records the usage row: a dictionary
lookup for the label set's cached children, then a few counter increments and histogram observations.
That call also writes the request's JSON log line (proxy/request_log.py). Names in labels are route
models, provider and credential *names*: never a secret, never a token.

Credential state (in-flight, cooldown, ok/cooling/invalid) is read at scrape time from the health every
replica shares in Redis, so each replica reports the same numbers for it (aggregate with max, not sum).

Several processes: set PROMETHEUS_MULTIPROC_DIR (an empty directory, wiped at start) before the server
starts and prometheus-client's multiprocess mode sums every worker process of a replica into one scrape.
Each replica is scraped on its own (one target per replica, e.g. via DNS service discovery), which needs
no shared store and keeps a dead replica's numbers from lingering. See docs/operations.md.
"""

import asyncio
import hmac
import ipaddress
import logging
import os
import time
from functools import lru_cache

import redis
from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from proxy import request_log
from proxy.asgi_io import Receive, Scope, Send, header, send_json
from routing import health

log = logging.getLogger(__name__)

LABELS = ("route", "provider", "credential")
NONE = "none"  # label value when a request never got as far as a route or credential
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_KINDS = ("input", "output", "cached", "reasoning")

REQUESTS = Counter("ds2api_requests", "Proxied requests, by outcome", (*LABELS, "protocol", "status"))
ERRORS = Counter("ds2api_request_errors", "Requests that ended in an error", (*LABELS, "error_type"))
LATENCY = Histogram("ds2api_request_duration_seconds", "Whole request time, as the client saw it", LABELS,
                    buckets=LATENCY_BUCKETS)
TTFB = Histogram("ds2api_time_to_first_byte_seconds", "Streamed requests: time until the first byte was sent",
                 LABELS, buckets=TTFB_BUCKETS)
TOKENS = Counter("ds2api_tokens", "Tokens used, by kind", (*LABELS, "kind"))
QUEUE_WAIT = Histogram("ds2api_queue_wait_seconds", "Time requests waited for a free credential", ("route",),
                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
USAGE_BUFFER = Gauge("ds2api_usage_buffer_rows", "Usage rows waiting in memory to be written",
                     multiprocess_mode="livesum")


class _Names:
    """Route, provider and credential names by id for one config snapshot (rebuilt when it changes)."""

    def __init__(self, snapshot) -> None:
        self.snapshot = snapshot
        self.routes: dict[int, str] = {}
        for route in [*snapshot.routes_exact.values(), *(info for _, info in snapshot.routes_glob)]:
            self.routes[route.id] = route.model
        self.providers = {p.id: p.name for p in snapshot.providers.values()}
        self.credentials = {c.id: c.name for p in snapshot.providers.values() for c in p.credentials}


_names: _Names | None = None
_children: dict[tuple, tuple] = {}


def _names_for(snapshot) -> _Names:
    global _names
    if _names is None or _names.snapshot is not snapshot:
        _names = _Names(snapshot)
    return _names


def _series(route: str, provider: str, credential: str, protocol: str, status: int) -> tuple:
    """The metric children of one label set, looked up once: `labels()` costs more than the update itself."""
    key = (route, provider, credential, protocol, status)
    found = _children.get(key)
    if found is None:
        names = (route, provider, credential)
        found = _children[key] = (
            REQUESTS.labels(*names, protocol, str(status)), LATENCY.labels(*names), TTFB.labels(*names),
            *(TOKENS.labels(*names, kind) for kind in TOKEN_KINDS),
        )
    return found


class _Tally:
    """Per-request metric updates gathered in plain dicts and applied to prometheus-client a few times a second.

    In multiprocess mode every update is an mmap write behind a lock and a process-id check (~1-2 us, about
    ten per request): tallying first makes that a handful per flush. Flushed FLUSH_SECONDS after the first
    update, before this process renders /metrics, and at shutdown; another worker's scrape may miss at most
    the last FLUSH_SECONDS.
    """

    FLUSH_SECONDS = 0.5

    def __init__(self) -> None:
        self.counters: dict = {}  # counter child -> amount
        self.histograms: dict = {}  # histogram child -> [count per bucket..., sum]
        self.usage_depth: int | None = None  # the usage buffer's depth at the latest request
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def inc(self, child, amount: float = 1) -> None:
        self.counters[child] = self.counters.get(child, 0) + amount
        self._schedule()

    def observe(self, child, value: float) -> None:
        tally = self.histograms.get(child)
        if tally is None:
            tally = self.histograms[child] = [0] * (len(child._upper_bounds) + 1)
        for i, bound in enumerate(child._upper_bounds):  # the bucket Histogram.observe would count
            if value <= bound:
                tally[i] += 1
                break
        tally[-1] += value
        self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a management command): apply at once
            self.flush()
            return
        if self._timer is not None:
            if self._loop is loop:
                return
            self._timer.cancel()  # set on a loop that is gone (tests run several): it would never fire
        self._loop, self._timer = loop, loop.call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        counters, self.counters = self.counters, {}
        histograms, self.histograms = self.histograms, {}
        for child, amount in counters.items():
            child.inc(amount)
        if self.usage_depth is not None:
            USAGE_BUFFER.set(self.usage_depth)
        for child, tally in histograms.items():
            # Histogram.observe's own bookkeeping (prometheus-client keeps one value per bucket and the sum),
            # n observations at once; tests/test_metrics.py checks it renders as observe() would.
            for bucket, count in zip(child._buckets, tally, strict=False):
                if count:
                    bucket.inc(count)
            child._sum.inc(tally[-1])


TALLY = _Tally()


def observe_request(runtime, request_id: str, protocol: str, token, request, route, outcome, usage,
                    started: float) -> None:
    """Account one finished request (metrics and its log line). Never raises: it runs in a `finally`.

    `started` is the request's time.perf_counter() start, as the usage row's latency uses.
    """
    try:
        latency_ms = int((time.perf_counter() - started) * 1000)
        names = _names_for(runtime.config.snapshot)
        route_name = names.routes.get(outcome.route_id) or (route.model if route else NONE)
        provider = names.providers.get(outcome.provider_id, NONE)
        credential = names.credentials.get(outcome.credential_id, NONE)
        requests, latency, ttfb, *tokens = _series(route_name, provider, credential, protocol, outcome.status)
        TALLY.inc(requests)
        if outcome.status >= 400:
            TALLY.inc(ERRORS.labels(route_name, provider, credential, outcome.error_type or "error"))
        TALLY.observe(latency, latency_ms / 1000)
        if outcome.ttfb_ms is not None:
            TALLY.observe(ttfb, outcome.ttfb_ms / 1000)
        for counter, value in zip(tokens, (usage.input_tokens, usage.output_tokens, usage.cached_tokens,
                                           usage.reasoning_tokens), strict=True):
            if value:
                TALLY.inc(counter, value)
        TALLY.usage_depth = runtime.usage.depth
        request_log.emit(request_id, protocol, token, request, route_name, provider, credential, outcome, usage,
                         latency_ms)
    except Exception:  # metrics must never break a request; the bug still shows in the log
        log.exception("could not record metrics for request %s", request_id)


def observe_queue_wait(route: str, seconds: float) -> None:
    """For admission: how long a request waited in line for a credential."""
    TALLY.observe(QUEUE_WAIT.labels(route), seconds)


# --- scraping ------------------------------------------------------------------------------------


class CredentialStateCollector:
    """In-flight, cooldown and status of every credential in the snapshot, from the shared health."""

    def __init__(self, snapshot, health: dict[int, dict]) -> None:
        self.snapshot, self.health = snapshot, health

    def collect(self):
        labels = ["provider", "credential"]
        in_flight = GaugeMetricFamily("ds2api_credential_in_flight", "Requests in flight (all replicas)", labels=labels)
        cooldown = GaugeMetricFamily("ds2api_credential_cooldown_seconds", "Seconds left in a cooldown",
                                     labels=labels)
        state = GaugeMetricFamily("ds2api_credential_state", "1 for the credential's current state",
                                  labels=[*labels, "state"])
        for provider in self.snapshot.providers.values():
            for credential in provider.credentials:
                info = self.health.get(credential.id)
                if info is None:
                    continue
                names = [provider.name, credential.name]
                in_flight.add_metric(names, info["in_flight"])
                cooldown.add_metric(names, info["cooldown_seconds"])
                for candidate in ("ok", "cooling", "invalid"):
                    state.add_metric([*names, candidate], 1.0 if info["status"] == candidate else 0.0)
        yield from (in_flight, cooldown, state)


@lru_cache(maxsize=8)
def _networks(allow: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(item, strict=False) for item in allow)


def allowed(scope: Scope) -> bool:
    """A valid bearer token (DS2API_METRICS_TOKEN), or a client address in DS2API_METRICS_ALLOW.

    With neither configured, loopback only. The address is the TCP peer: a reverse proxy in front must
    be on the allowlist itself, or the scraper must send the token.
    """
    token = settings.DS2API_METRICS_TOKEN
    if token:
        sent = (header(scope, b"authorization") or b"").decode("latin-1")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
            return True
    client = scope.get("client")
    try:
        address = ipaddress.ip_address(client[0]) if client else None
    except ValueError:
        address = None
    allow = tuple(settings.DS2API_METRICS_ALLOW)
    if address is None:
        return False
    if allow:
        return any(address in network for network in _networks(allow))
    return not token and address.is_loopback


def render(runtime, health: dict[int, dict]) -> bytes:
    TALLY.flush()
    USAGE_BUFFER.set(runtime.usage.depth)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    registry.register(CredentialStateCollector(runtime.config.snapshot, health))
    return generate_latest(registry)


class _Default:
    """The process-wide default registry (our metrics plus process_* and python_*), as one collector."""

    def collect(self):
        yield from REGISTRY.collect()


async def metrics_endpoint(app, scope: Scope, receive: Receive, send: Send, match) -> None:
    if not allowed(scope):
        status = 401 if settings.DS2API_METRICS_TOKEN else 403
        await send_json(send, status, {"error": {"message": "metrics need a valid bearer token or an allowed "
                                                 "address", "type": "permission_error"}})
        return
    snapshot = await app.runtime.config.get()
    ids = [c.id for p in snapshot.providers.values() for c in p.credentials]
    try:
        states = await asyncio.to_thread(health.read_health, ids) if ids else {}
    except (redis.RedisError, OSError) as exc:  # Redis away: serve the rest; the gap is the signal
        log.warning("credential state left out of /metrics: %s", exc)
        states = {}
    body = render(app.runtime, states)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
