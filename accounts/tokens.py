"""Gateway token format: `ds2-` + 40 url-safe random characters; stored as SHA-256 digest + visible prefix."""

import functools
import hashlib
import hmac
import ipaddress
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


@functools.lru_cache(maxsize=1024)
def _networks(allowed: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    # Entries were validated when the token was saved; an unparsable one (e.g. edited in the database)
    # simply matches nothing rather than opening the token to everyone.
    networks = []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return tuple(networks)


def ip_allowed(client_ip: str | None, allowed: tuple[str, ...]) -> bool:
    """True if the token has no allowlist or the client address is inside one of its networks."""
    if not allowed:
        return True
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(allowed))


def normalise_ip_allowlist(entries: list[str]) -> list[str]:
    """Validate addresses / CIDR networks; raises ValueError naming the first bad entry."""
    cleaned = []
    for entry in entries:
        try:
            cleaned.append(str(ipaddress.ip_network(str(entry).strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return cleaned
