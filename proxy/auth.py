"""Gateway-token authentication against the in-process snapshot (no database query)."""

import time
from urllib.parse import parse_qsl

from accounts.tokens import PREFIX_LENGTH, digests_match, ip_allowed, token_digest
from proxy.asgi_io import Scope
from proxy.canonical import GatewayError
from routing.snapshot import Snapshot, TokenInfo


def extract_token(scope: Scope) -> str | None:
    """Whichever header the client's SDK uses: Bearer, x-api-key, x-goog-api-key, or ?key=."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
        elif name in (b"x-api-key", b"x-goog-api-key") and value:
            return value.decode("latin-1").strip()
    query = scope.get("query_string") or b""
    if b"key=" in query:
        for key, value in parse_qsl(query.decode("latin-1")):
            if key == "key" and value:
                return value
    return None


def authenticate(scope: Scope, snapshot: Snapshot) -> TokenInfo:
    token = extract_token(scope)
    if not token:
        raise GatewayError("authentication", "missing gateway token: send it as 'Authorization: Bearer <token>'")
    info = snapshot.tokens_by_prefix.get(token[:PREFIX_LENGTH])
    if info is None or not digests_match(token_digest(token), info.digest):
        raise GatewayError("authentication", "invalid gateway token")
    if info.revoked or info.expired(time.time()):
        raise GatewayError("authentication", "this gateway token has expired or been revoked")
    if info.allowed_ips and not ip_allowed((scope.get("client") or (None,))[0], info.allowed_ips):
        raise GatewayError("permission", "this gateway token may not be used from this address")
    return info
