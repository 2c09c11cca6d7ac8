"""The shared upstream HTTP client: one aiohttp session per worker event loop, pooled keep-alive.

aiohttp rather than httpx on the hot path: measured (see docs/performance.md) httpx's pool saturates a core
at ~700 requests/s, aiohttp keeps up with a fake upstream at ~7,000. Redirects are never followed, so a
provider cannot bounce the gateway to an internal address.
"""

import asyncio

import aiohttp
from django.conf import settings

from proxy.adapters.base import UpstreamRequest
from proxy.canonical import GatewayError
from proxy.ssrf import GuardedResolver, UpstreamRefused, refused_literal


class UpstreamClient:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30,
                                             resolver=GuardedResolver())  # SSRF: every address dialled is checked
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",),
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._loop = loop
        return self._session

    async def post(
        self, request: UpstreamRequest, *, connect_timeout: float, read_timeout: float, total: float | None
    ) -> aiohttp.ClientResponse:
        reason = refused_literal(request.url)
        if reason:
            raise UpstreamRefused(f"the provider address is {reason}; the gateway does not connect there")
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect_timeout, sock_read=read_timeout)
        return await self.session().post(
            request.url, data=request.body, headers=request.headers, timeout=timeout, allow_redirects=False
        )

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


async def read_capped(response: aiohttp.ClientResponse) -> bytes:
    """A non-streamed answer, read whole (it is translated as one JSON document) but never more than
    DS2API_MAX_RESPONSE_BYTES: a hostile or broken provider cannot make a worker hold an endless body."""
    limit = settings.DS2API_MAX_RESPONSE_BYTES
    length = response.content_length
    if length is not None and length <= limit:
        return await response.read()  # the common case: the length is known and fine
    if length is not None:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> GatewayError:
    return GatewayError("upstream", f"the provider's answer exceeds DS2API_MAX_RESPONSE_BYTES ({limit} bytes)",
                        status=502)


def header_dict(response: aiohttp.ClientResponse) -> dict[str, str]:
    """Response headers with lower-case names, as the adapters look them up (HTTP names are case-insensitive)."""
    return {name.lower(): value for name, value in response.headers.items()}
