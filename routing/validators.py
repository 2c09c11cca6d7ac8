"""Validation of outbound provider URLs (SSRF guard)."""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

_METADATA_HOSTS = {"metadata.google.internal", "metadata", "169.254.169.254", "fd00:ec2::254"}
# Cloud instance-metadata services (AWS/GCP/Azure/OpenStack/DigitalOcean, AWS IPv6, AWS ECS tasks, Alibaba,
# Oracle): they hand out the host's own credentials, so they are refused even when private upstreams are allowed.
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200",
                                "192.0.0.192"})


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def refusal(address: str, allow_private: bool) -> str | None:
    """Why an upstream may not be reached at this address (None: it may). Used at save and at connect time."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.compressed in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if not allow_private and _is_private(ip.compressed):
        return "a private or loopback address"
    return None


def resolve_addresses(host: str) -> list[str]:
    try:
        return [ipaddress.ip_address(host).compressed]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValidationError(f"host {host!r} does not resolve") from exc
    return sorted({info[4][0] for info in infos})


def check_dialled_host(url: str, *, allow_private: bool | None = None) -> None:
    """Refuse a URL whose host resolves, right now, to an address the policy refuses (metadata always).

    For synchronous clients (the health probes) that cannot use the proxy's connect-time resolver
    (proxy/ssrf.py); a name that does not resolve is left for the HTTP client to fail on.
    """
    if allow_private is None:
        allow_private = settings.DS2API_ALLOW_PRIVATE_UPSTREAMS
    host = (urlsplit(url).hostname or "").lower()
    try:
        addresses = resolve_addresses(host)
    except ValidationError:
        return
    for address in addresses:
        reason = refusal(address, allow_private)
        if reason:
            raise ValidationError(f"host {host!r} resolves to {reason} ({address}); the gateway does not connect there")


def _literal(host: str) -> list[str]:
    try:
        return [ipaddress.ip_address(host).compressed]
    except ValueError:
        return []


def validate_base_url(url: str, *, allow_private: bool | None = None) -> str:
    """Return the normalised URL, or raise ValidationError if it is not a safe upstream target."""
    if allow_private is None:
        allow_private = settings.DS2API_ALLOW_PRIVATE_UPSTREAMS
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"}:
        raise ValidationError("base_url must start with http:// or https://")
    if not parts.hostname:
        raise ValidationError("base_url has no host")
    if parts.username or parts.password:
        raise ValidationError("base_url must not carry credentials; store them as a credential secret")
    if parts.query or parts.fragment:
        raise ValidationError("base_url must not have a query string or fragment")
    host = parts.hostname.lower()
    if host in _METADATA_HOSTS:
        raise ValidationError(f"base_url host {host!r} is a cloud metadata endpoint")
    # With private upstreams allowed, names are not looked up here (the name may only resolve where the
    # gateway runs); the connect-time guard (proxy/ssrf.py) checks every address actually dialled.
    addresses = resolve_addresses(host) if not allow_private else _literal(host)
    for address in addresses:
        reason = refusal(address, allow_private)
        if reason == "a cloud metadata address":
            raise ValidationError(f"base_url host {host!r} resolves to a cloud metadata address ({address})")
        if reason:
            raise ValidationError(
                f"base_url host {host!r} resolves to a private or loopback address ({address}); "
                "set DS2API_ALLOW_PRIVATE_UPSTREAMS=1 to allow it"
            )
    return url.strip().rstrip("/")
