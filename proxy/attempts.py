"""How one upstream attempt fails, shared by every call path (generation in `proxy.pipeline`, embeddings and
token counts in `proxy.side_calls`).

An attempt that fails before the client saw a byte raises `Retry`: the attempt loop moves on to another
credential within the route's retry budget, and the retry carries the credential's health verdict for the
attempt's settlement ("fail": 5xx, timeout, connect error, unreadable answer; "rate": 429; "auth": the
provider refused the key). Any other `GatewayError` goes to the client as it is, with verdict "client".
Everything here runs only when an attempt fails: the success path costs nothing extra.
"""

import aiohttp
import orjson

from proxy.canonical import GatewayError
from proxy.http_client import TransportError
from routing.ratelimit_headers import Headroom

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class Retry(Exception):
    """This attempt failed before the client saw a byte; another credential may still serve."""

    def __init__(self, error: GatewayError, verdict: str = "fail", note: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error, self.verdict, self.note, self.retry_after = error, verdict, note[:300], retry_after


def classify(status: int, err: GatewayError, headroom: Headroom) -> tuple[str, str, float | None]:
    """(health verdict, error note, retry-after seconds) for an upstream error status."""
    retry_after = err.retry_after if err.retry_after is not None else headroom.retry_after
    if status == 429:
        return "rate", "", retry_after
    if status in (401, 403):
        return "auth", f"HTTP {status}: the provider rejected this key", None
    if status in RETRYABLE_STATUS:
        return "fail", "", retry_after
    return "client", "", None


def refusal(status: int, err: GatewayError, headroom: Headroom, provider: str) -> Exception:
    """What an upstream error status (>= 400) means: a Retry, or the error to hand to the client."""
    verdict, note, retry_after = classify(status, err, headroom)
    note = note or f"HTTP {status}: {err.message}"
    if verdict == "auth":  # the provider refused our key: the client's own token is fine
        return Retry(GatewayError("upstream", f"the provider rejected the credential for {provider}", status=502),
                     verdict, note)
    if status in RETRYABLE_STATUS:
        return Retry(err, verdict, note, retry_after)
    return err


def redirected(status: int, provider: str) -> Retry:
    # Redirects are never followed (SSRF): a provider that answers with one is broken.
    return Retry(GatewayError("upstream", f"the provider answered with a redirect ({provider})", status=502),
                 note=f"HTTP {status}: redirects are not followed")


def unreachable(exc: BaseException, provider: str) -> Retry:
    """No answer: the provider timed out or the connection failed before a response arrived."""
    if isinstance(exc, TimeoutError):
        return Retry(GatewayError("timeout", f"the provider did not answer in time ({provider})"), note="timeout")
    return Retry(GatewayError("upstream", f"could not reach the provider ({provider})", status=502),
                 note=f"connection failed: {_described(exc)}")


def broke_off(exc: BaseException, provider: str) -> Retry:
    """The response body broke off (reset, short read, read timeout) before the client saw any of it."""
    if isinstance(exc, TimeoutError):
        return Retry(GatewayError("timeout", f"the provider did not answer in time ({provider})"), note="timeout")
    return Retry(GatewayError("upstream", f"the provider's response broke off ({provider})", status=502),
                 note=f"response broke off: {_described(exc)}")


def _described(exc: BaseException) -> str:
    # The exception's own text says why (e.g. the SSRF guard naming a refused address); never a secret, which
    # travels in headers the transport errors do not repeat.
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unreadable(err: GatewayError) -> Exception:
    """A 200 the adapter cannot read is the provider's failure (another credential may answer); any other
    error raised while reading it is the client's."""
    return Retry(err, note=err.message) if err.kind == "upstream" else err


def unforwardable(exc: orjson.JSONEncodeError) -> GatewayError:
    """A client value the upstream body cannot carry (orjson refuses nesting deeper than 254 levels)."""
    if "recursion" in str(exc).lower():
        return GatewayError("invalid_request", "the request body is nested too deeply to forward")
    raise exc


# What an upstream call raises when no response arrives or its body breaks off (aiohttp's errors: the SSRF
# guard's refusal, which is one).
TRANSPORT_ERRORS = (TimeoutError, TransportError, aiohttp.ClientError)
