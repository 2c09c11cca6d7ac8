"""Keeping secrets out of text the gateway repeats from an upstream or stores.

A provider (or a compromised one) may echo the key it was sent, e.g. "Incorrect API key provided: sk-...".
Upstream error messages reach clients, logs and the dashboard's health view, so each one passes through
`scrub_error` with the credential's secret before anyone sees it: only the last four characters survive,
as everywhere else in ds2api.
"""

import re
from typing import Any

from proxy.canonical import GatewayError

MIN_SECRET_LENGTH = 8  # shorter values would match ordinary words; real provider keys are far longer


def scrub(text: str, secret: str) -> str:
    if not text or len(secret) < MIN_SECRET_LENGTH or secret not in text:
        return text
    return text.replace(secret, "****" + secret[-4:])


def scrub_error(err: GatewayError, secret: str) -> GatewayError:
    err.message = scrub(err.message, secret)
    if err.param:
        err.param = scrub(err.param, secret)
    return err


# --- stored bodies -----------------------------------------------------------------------------------
# A route with `log_bodies` keeps request/response bodies for the request log. Before one is stored, every
# value that looks like a secret is masked (last four characters kept) and inline base64 data (images,
# audio, files) is replaced by a placeholder naming its type and size. Runs in the usage writer's thread,
# never on the request path.

# Object keys whose values are credentials whatever they look like. Not bare "token": `max_tokens` & co.
_SECRET_KEY = re.compile(
    r"(?i)^(?:(?:proxy[-_]?)?authori[sz]ation|(?:x[-_]?)?(?:goog[-_]?)?api[-_]?key|.*[-_]api[-_]?key|.*secret.*|"
    r"password|passwd|cookie|set[-_]cookie|(?:access|refresh|id|bearer|session|auth)[-_]?token|credentials?)$"
)
# Secret-looking text anywhere in a string: bearer tokens, provider key formats, ds2api gateway tokens.
_SECRET_TEXT = re.compile(
    r"(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\bsk-ant-[A-Za-z0-9_-]{8,}|\bsk-[A-Za-z0-9_-]{8,}|\bAIza[0-9A-Za-z_-]{20,}|\bds2-[A-Za-z0-9_-]{8,}"
)
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*;base64,(?P<data>[A-Za-z0-9+/=_-]+)")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/_-]|\r?\n)+={0,2}")
MIN_BASE64_LENGTH = 256  # shorter runs are ids and hashes, worth keeping; inline media is far longer
MAX_DEPTH = 64  # deeper structure is summarized, so a hostile body cannot exhaust the writer's stack
_MIME_KEYS = ("media_type", "mime_type", "mimeType")
_DATA_KEYS = frozenset({"data", "b64_json", "image_data", "file_data", "audio"})


def _mask(secret: str) -> str:
    # The last four characters identify a long key, as everywhere in ds2api; of a short one they are too much.
    return f"[redacted …{secret[-4:]}]" if len(secret) >= 16 else "[redacted]"


def _placeholder(data: str, mime: str | None) -> str:
    length = len(data) - data.count("\n") - data.count("\r")
    size = length * 3 // 4 - data.count("=")
    return f"[{mime or 'base64 data'} omitted: {size} bytes]"


def _looks_base64(text: str) -> bool:
    return len(text) >= MIN_BASE64_LENGTH and _BASE64.fullmatch(text) is not None


def redact_text(text: str, mime: str | None = None) -> str:
    """A string with secrets masked and inline base64 replaced by a placeholder."""
    if _looks_base64(text):
        return _placeholder(text, mime)
    if "base64," in text:
        text = _DATA_URL.sub(lambda m: _placeholder(m["data"], m["mime"]), text)
    return _SECRET_TEXT.sub(lambda m: _mask(m[0]), text)


def redact_json(value: Any, _depth: int = 0) -> Any:
    """A copy of a decoded JSON value that is safe to store: see the section comment above."""
    if isinstance(value, str):
        return redact_text(value)
    if _depth >= MAX_DEPTH and isinstance(value, dict | list):
        return "[nested too deeply to store]"
    if isinstance(value, list):
        return [redact_json(item, _depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    mime = next((value[k] for k in _MIME_KEYS if isinstance(value.get(k), str) and "/" in value[k]), None)
    out = {}
    for key, item in value.items():
        if isinstance(item, str | int) and not isinstance(item, bool) and item != "" and _SECRET_KEY.match(key):
            out[key] = _mask(str(item))
        elif isinstance(item, str) and key in _DATA_KEYS and len(item) >= 16 and _BASE64.fullmatch(item):
            out[key] = _placeholder(item, mime)  # short inline media too (Anthropic `source.data`, Gemini `data`)
        elif isinstance(item, str):
            out[key] = redact_text(item, mime)
        else:
            out[key] = redact_json(item, _depth + 1)
    return out
