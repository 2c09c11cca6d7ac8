"""The connect-time SSRF guard: every address the gateway dials for a provider passes the same rule as a
provider's base URL when it is saved (routing/validators.py).

Checking only at save time would leave two holes: a name that resolved to a public address then and resolves
to 169.254.169.254 now (DNS rebinding), and names that are not looked up at save time at all because private
upstreams are allowed. So the upstream connector uses `GuardedResolver`: cloud-metadata addresses are always
dropped, private/loopback/link-local ones unless DS2API_ALLOW_PRIVATE_UPSTREAMS is on (the upstream client,
proxy/http_client.py, asks it for every new connection; image fetching's aiohttp connector too). Both skip the
resolver for IP literals, which `refused_literal` covers (literals were validated when saved, but the
allow-private switch may have been turned off since). Redirects are never followed, so a provider cannot
bounce a request elsewhere either.
"""

import functools
import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings
from yarl import URL

from routing.validators import refusal


class UpstreamRefused(aiohttp.ClientConnectionError):
    """The destination address is not allowed (metadata, or private while private upstreams are off)."""


def _allow_private() -> bool:
    return bool(getattr(settings, "DS2API_ALLOW_PRIVATE_UPSTREAMS", False))


class GuardedResolver(AbstractResolver):
    def __init__(self, inner: AbstractResolver | None = None, allow_private: bool | None = None) -> None:
        self._inner = inner or aiohttp.resolver.DefaultResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        allow_private = _allow_private() if self._allow_private is None else self._allow_private
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if refusal(r["host"], allow_private) is None]
        if not allowed:
            reason = refusal(results[0]["host"], allow_private) if results else "no address"
            raise UpstreamRefused(f"{host} resolves to {reason}; the gateway does not connect there")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@functools.lru_cache(maxsize=1024)
def _literal_refusal(host: str, allow_private: bool) -> str | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: the resolver checks it
    return refusal(host, allow_private)


def refused_literal(url: str) -> str | None:
    """Why a URL whose host is an IP literal may not be dialled (None: allowed, or a name)."""
    host = URL(url).host or ""
    return _literal_refusal(host, _allow_private())
