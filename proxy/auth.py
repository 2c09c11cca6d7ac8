"""Gateway-token authentication against the in-process snapshot (no database query)."""

import time
from urllib.parse import parse_qsl

from accounts.tokens import PREFIX_LENGTH, digests_match, ip_allowed, token_digest
from proxy.asgi_io import Scope
from proxy.auth_throttle import THROTTLE
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
    address = (scope.get("client") or (None,))[0]
    THROTTLE.check(address)  # 429 once this address has failed too often this minute
    token = extract_token(scope)
    if not token:
        _failed(scope, address, "missing", None)
        raise GatewayError("authentication", "missing gateway token: send it as 'Authorization: Bearer <token>'")
    info = snapshot.tokens_by_prefix.get(token[:PREFIX_LENGTH])
    if info is None or not digests_match(token_digest(token), info.digest):
        _failed(scope, address, "invalid", token)
        raise GatewayError("authentication", "invalid gateway token")
    if info.revoked or info.expired(time.time()):
        _failed(scope, address, "revoked_or_expired", token, info.team.id)
        raise GatewayError("authentication", "this gateway token has expired or been revoked")
    if info.allowed_ips and not ip_allowed(address, info.allowed_ips):
        _failed(scope, address, "address_not_allowed", token, info.team.id)  # a leaked token, used elsewhere?
        raise GatewayError("permission", "this gateway token may not be used from this address")
    return info


def _failed(scope: Scope, address: str | None, reason: str, token: str | None, team_id: int | None = None) -> None:
    # Some endpoints authenticate twice (e.g. /v1/responses); one request is one failure.
    if not scope.get("ds2.auth_failed"):
        scope["ds2.auth_failed"] = True
        THROTTLE.failed(address, reason, token, team_id)
