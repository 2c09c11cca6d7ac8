"""Reasoning signatures across providers.

Anthropic signs thinking blocks and Gemini signs parts (`thoughtSignature`); each provider verifies only its
own and rejects the other's. Canonical signatures therefore carry their origin: Gemini's are kept behind a
`gemini:` prefix, anything else is Anthropic's (or unknown). A Gemini client cannot hold a non-Gemini
signature in its `thoughtSignature` bytes as-is, so it gets it wrapped, and unwrapped when it comes back.
"""

import base64
import binascii

GEMINI_PREFIX = "gemini:"
_WRAP = b"ds2sig:"


def from_gemini(raw: str) -> str:
    """A thoughtSignature received from a Gemini upstream, as a canonical signature."""
    return GEMINI_PREFIX + raw


def gemini_native(signature: str | None) -> str | None:
    """The thoughtSignature to send a Gemini upstream, or None when the signature is not Gemini's."""
    if signature and signature.startswith(GEMINI_PREFIX):
        return signature[len(GEMINI_PREFIX):]
    return None


def is_foreign_signature(signature: str) -> bool:
    """True for signatures an Anthropic upstream cannot verify."""
    return signature.startswith(GEMINI_PREFIX)


def to_gemini_client(signature: str) -> str:
    """A canonical signature as the base64 thoughtSignature a Gemini client holds and sends back."""
    native = gemini_native(signature)
    if native is not None:
        return native
    return base64.b64encode(_WRAP + signature.encode()).decode()


def from_gemini_client(raw: str) -> str:
    """A thoughtSignature a Gemini client sent, as a canonical signature."""
    try:  # the google-genai SDK sends bytes back URL-safe encoded
        decoded = base64.b64decode(raw.replace("-", "+").replace("_", "/") + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return from_gemini(raw)
    if decoded.startswith(_WRAP):
        return decoded[len(_WRAP):].decode(errors="replace")
    return from_gemini(raw)
