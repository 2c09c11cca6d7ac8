"""Gateway token format: `ds2-` + 40 url-safe random characters; stored as SHA-256 digest + visible prefix."""

import hashlib
import hmac
import secrets

TOKEN_MARK = "ds2-"  # noqa: S105 (a format marker, not a secret)
PREFIX_LENGTH = 12  # "ds2-" + 8 random characters: enough to find the row, useless to an attacker


def generate_token() -> str:
    return TOKEN_MARK + secrets.token_urlsafe(30)


def token_digest(token: str) -> str:
    # Tokens carry 240 bits of randomness, so a plain SHA-256 cannot be brute-forced; no pepper is
    # needed, which keeps the digest stable across SECRET_KEY rotations.
    return hashlib.sha256(token.encode()).hexdigest()


def token_prefix(token: str) -> str:
    return token[:PREFIX_LENGTH]


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
