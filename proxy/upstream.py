"""The shared upstream HTTP client: one pool of keep-alive connections per worker event loop.

proxy/http_client.py rather than aiohttp or httpx on the hot path: measured (see docs/performance.md),
httpx's pool saturates a core at ~700 requests/s, aiohttp spends ~170 us of CPU per request, the lean client
~45 us. Redirects are never followed, and every address dialled passes the SSRF guard.
"""

import asyncio

from django.conf import settings

from proxy.adapters.base import UpstreamRequest
from proxy.canonical import GatewayError
from proxy.http_client import HttpClient, Response
from proxy.ssrf import GuardedResolver, UpstreamRefused, refused_literal


class UpstreamClient:
    def __init__(self) -> None:
        self._client: HttpClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> HttpClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = HttpClient(resolver=GuardedResolver(), keepalive_timeout=30)  # SSRF: every address checked
            self._loop = loop
        return self._client

    async def post(
        self, request: UpstreamRequest, *, connect_timeout: float, read_timeout: float, total: float | None
    ) -> Response:
        reason = refused_literal(request.url)
        if reason:
            raise UpstreamRefused(f"the provider address is {reason}; the gateway does not connect there")
        return await self.client().post(request.url, request.body, request.headers, connect_timeout=connect_timeout,
                                        read_timeout=read_timeout, total=total)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


async def read_capped(response: Response) -> bytes:
    """A non-streamed answer, read whole (it is translated as one JSON document) but never more than
    DS2API_MAX_RESPONSE_BYTES: a hostile or broken provider cannot make a worker hold an endless body."""
    limit = settings.DS2API_MAX_RESPONSE_BYTES
    length = response.content_length
    if length is not None and length <= limit:
        return await response.read()  # the common case: the length is known and fine
    if length is not None:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in response.iter_chunks():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> GatewayError:
    return GatewayError("upstream", f"the provider's answer exceeds DS2API_MAX_RESPONSE_BYTES ({limit} bytes)",
                        status=502)


def header_dict(response: Response) -> dict[str, str]:
    """Response headers with lower-case names, as the adapters look them up (HTTP names are case-insensitive)."""
    return dict(response.headers)
