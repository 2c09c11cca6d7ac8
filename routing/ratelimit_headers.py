"""Reading a provider's own view of our remaining capacity from its response headers.

Every upstream response (success or error) passes through `parse_headers`; the result feeds the
`headroom` strategy and cooldowns. Formats seen in the wild:

- OpenAI and compatible hosts: `x-ratelimit-remaining-requests` / `-tokens`, `x-ratelimit-limit-*`,
  `x-ratelimit-reset-requests` / `-tokens` as Go-style durations ("1s", "6m0s", "20ms", "1h2m3.5s").
- Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
  resets as RFC 3339 timestamps.
- Everyone: `retry-after` (delta seconds or an HTTP date) and `retry-after-ms`.
- Gemini sends no headers; its 429 `RetryInfo` is parsed by the adapter into `GatewayError.retry_after`.

All times come out relative (seconds from now), so the Redis script can anchor them on its own clock.
"""

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True, slots=True)
class Headroom:
    """What the provider said about our remaining quota; None where it said nothing."""

    remaining_requests: int | None = None
    limit_requests: int | None = None
    reset_requests: float | None = None  # seconds from now
    remaining_tokens: int | None = None
    limit_tokens: int | None = None
    reset_tokens: float | None = None
    retry_after: float | None = None  # seconds from now

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)

    def exhausted_for(self) -> float | None:
        """Seconds until the provider will accept requests again, if it says we have none left."""
        waits = []
        if self.remaining_requests == 0 and self.reset_requests:
            waits.append(self.reset_requests)
        if self.remaining_tokens == 0 and self.reset_tokens:
            waits.append(self.reset_tokens)
        return max(waits) if waits else None


@lru_cache(maxsize=4096)  # every response carries one or two; providers repeat the same few values
def parse_duration(value: str) -> float | None:
    """Go-style durations ("6m0s", "20ms") or a bare number of seconds."""
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(value) and position else None


def parse_timestamp(value: str, now: float | None = None) -> float | None:
    """An RFC 3339 timestamp as seconds from now (never negative)."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """`Retry-After`: delta seconds or an HTTP date."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(float(value.strip())))
    except ValueError:
        return None


def _min(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def parse_headers(headers: Mapping[str, str], now: float | None = None) -> Headroom:
    """Extract rate-limit state from response headers (names compared in lower case)."""
    # aiohttp's CIMultiDictProxy already matches names case-insensitively; plain dicts are lowered here.
    get = headers.get if hasattr(headers, "getall") else {k.lower(): v for k, v in headers.items()}.get
    retry_after = None
    if get("retry-after-ms") is not None:
        ms = _int(get("retry-after-ms"))
        retry_after = ms / 1000 if ms is not None else None
    if retry_after is None and get("retry-after") is not None:
        retry_after = parse_retry_after(get("retry-after"), now)

    openai_reset_req = get("x-ratelimit-reset-requests")
    openai_reset_tok = get("x-ratelimit-reset-tokens")
    anthropic_reset_req = get("anthropic-ratelimit-requests-reset")
    anthropic_reset_tok = get("anthropic-ratelimit-tokens-reset") or get("anthropic-ratelimit-input-tokens-reset")
    return Headroom(
        remaining_requests=_int(get("x-ratelimit-remaining-requests") or get("anthropic-ratelimit-requests-remaining")),
        limit_requests=_int(get("x-ratelimit-limit-requests") or get("anthropic-ratelimit-requests-limit")),
        reset_requests=_first(
            parse_duration(openai_reset_req) if openai_reset_req else None,
            parse_timestamp(anthropic_reset_req, now) if anthropic_reset_req else None,
        ),
        # Anthropic may report input and output token buckets separately: the scarcer one is what limits us.
        remaining_tokens=_min(
            _int(get("x-ratelimit-remaining-tokens")),
            _int(get("anthropic-ratelimit-tokens-remaining")),
            _int(get("anthropic-ratelimit-input-tokens-remaining")),
            _int(get("anthropic-ratelimit-output-tokens-remaining")),
        ),
        limit_tokens=_int(get("x-ratelimit-limit-tokens") or get("anthropic-ratelimit-tokens-limit")
                          or get("anthropic-ratelimit-input-tokens-limit")),
        reset_tokens=_first(
            parse_duration(openai_reset_tok) if openai_reset_tok else None,
            parse_timestamp(anthropic_reset_tok, now) if anthropic_reset_tok else None,
        ),
        retry_after=retry_after,
    )

