"""Run-time state of the fake upstream: faults, rate-limit headers, statistics, config.

Shared between the ASGI app (event-loop thread) and tests (main thread); the control API under
`/_fake/` is a thin JSON layer over the methods here.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qsl

import orjson

FAULT_MODES = ("status", "slow", "drip", "cut", "reset", "malformed", "huge")
ARRIVALS_KEPT = 10_000
REQUESTS_KEPT = 100
SENSITIVE_HEADERS = (b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key")


@dataclass(slots=True)
class Fault:
    key: str
    mode: str
    count: int | None = None  # None: until cleared
    status: int = 500
    retry_after: float | None = None
    delay: float = 1.0
    after: int = 1
    size: int = 1_000_000
    message: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> Fault:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        fault = cls(**{"key": "*", **data})
        fault.status, fault.delay, fault.after, fault.size = (
            int(fault.status),
            float(fault.delay),
            int(fault.after),
            int(fault.size),
        )
        if fault.mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}")
        if fault.count is not None and fault.count < 1:
            raise ValueError("count must be >= 1")
        if not 100 <= int(fault.status) <= 599:
            raise ValueError("status must be an HTTP status")
        return fault


@dataclass(slots=True)
class RateLimit:
    limit_requests: int = 10_000
    remaining_requests: int = 9_999
    limit_tokens: int = 2_000_000
    remaining_tokens: int = 1_999_000
    reset_requests: float = 1.0
    reset_tokens: float = 1.0


@dataclass(slots=True)
class KeyStats:
    requests: int = 0
    errors: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    arrivals: deque = field(default_factory=lambda: deque(maxlen=ARRIVALS_KEPT))
    generation: int = 0  # which reset_stats() period this belongs to

    def as_dict(self, arrivals: bool = True) -> dict:
        now = time.time()
        out = {
            "requests": self.requests,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests_last_60s": sum(1 for t in self.arrivals if now - t <= 60),
        }
        if arrivals:
            out["arrivals"] = list(self.arrivals)
        return out


@dataclass(slots=True)
class Config:
    chunk_delay: float = 0.0  # seconds between streamed events
    byte_chunk: int = 0  # > 0: write each streamed event in pieces of this many bytes
    invalid_keys: list[str] = field(default_factory=list)


def mask(value: str) -> str:
    scheme, sep, secret = value.rpartition(" ")
    return f"{scheme}{sep}****{secret[-4:]}"


class FakeState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.reset()

    # -- everything ------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.faults: list[Fault] = []
            self.ratelimits: dict[str, RateLimit] = {}
            self.config = Config()
            self._invalid: frozenset[str] = frozenset()
        self.reset_stats()

    def next_id(self) -> int:
        return next(self._ids)

    # -- faults ----------------------------------------------------------------------------
    def add_fault(self, key: str = "*", mode: str = "status", **params) -> Fault:
        fault = Fault.from_dict({"key": key, "mode": mode, **params})
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self, key: str | None = None) -> None:
        with self._lock:
            self.faults = [] if key is None else [f for f in self.faults if f.key != key]

    def take_fault(self, key: str) -> Fault | None:
        """The fault for this request: key-specific faults first, then `*`; uses up one count."""
        if not self.faults:
            return None
        with self._lock:
            chosen = next((f for f in self.faults if f.key == key), None)
            if chosen is None:
                chosen = next((f for f in self.faults if f.key == "*"), None)
            if chosen is not None and chosen.count is not None:
                chosen.count -= 1
                if chosen.count <= 0:
                    self.faults.remove(chosen)
            return chosen

    def faults_as_list(self) -> list[dict]:
        with self._lock:
            return [asdict(f) for f in self.faults]

    # -- rate-limit headers ----------------------------------------------------------------
    def set_ratelimit(self, key: str = "*", **values) -> RateLimit:
        current = self.ratelimits.get(key) or RateLimit()
        unknown = set(values) - set(RateLimit.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ratelimit fields: {sorted(unknown)}")
        updated = RateLimit(**{**asdict(current), **values})
        self.ratelimits[key] = updated
        return updated

    def ratelimit(self, key: str) -> RateLimit:
        return self.ratelimits.get(key) or self.ratelimits.get("*") or _DEFAULT_RATELIMIT

    # -- config ----------------------------------------------------------------------------
    def configure(self, **values) -> Config:
        unknown = set(values) - set(Config.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        self.config = Config(**{**asdict(self.config), **values})
        self._invalid = frozenset(self.config.invalid_keys)
        return self.config

    def is_invalid_key(self, key: str) -> bool:
        return key in self._invalid

    # -- statistics ------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.generation = getattr(self, "generation", 0) + 1
        self.total_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.keys: dict[str, KeyStats] = {}
        self.requests: deque = deque(maxlen=REQUESTS_KEPT)

    def begin(self, key: str, method: str, path: str, query: bytes, headers: list, body: bytes) -> KeyStats:
        self.requests.append((method, path, query, headers, body))
        self.total_requests += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        stats = self.keys.get(key)
        if stats is None:
            stats = self.keys[key] = KeyStats(generation=self.generation)
        stats.requests += 1
        stats.in_flight += 1
        if stats.in_flight > stats.max_in_flight:
            stats.max_in_flight = stats.in_flight
        stats.arrivals.append(time.time())
        return stats

    def end(self, stats: KeyStats) -> None:
        stats.in_flight -= 1
        if stats.generation == self.generation:  # not a request that straddled reset_stats()
            self.in_flight -= 1

    def stats(self, arrivals: bool = True) -> dict:
        return {
            "total_requests": self.total_requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "keys": {k: s.as_dict(arrivals) for k, s in list(self.keys.items())},
        }

    def last_requests(self, n: int = 1) -> list[dict]:
        return [_describe(r) for r in list(self.requests)[-n:]]

    def last_request(self) -> dict | None:
        found = self.last_requests(1)
        return found[0] if found else None


_DEFAULT_RATELIMIT = RateLimit()


def _describe(raw: tuple) -> dict:
    method, path, query, headers, body = raw
    shown = {}
    for name, value in headers:
        text = value.decode("latin-1")
        shown[name.decode("latin-1")] = mask(text) if name in SENSITIVE_HEADERS else text
    params = {k: (mask(v) if k == "key" else v) for k, v in parse_qsl(query.decode("latin-1"))}
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = body.decode("utf-8", "replace")
    return {"method": method, "path": path, "query": params, "headers": shown, "body": parsed}
