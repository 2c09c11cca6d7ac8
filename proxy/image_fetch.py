"""Fetching an image URL a client sent, for a provider that needs the bytes rather than the URL (local models).

The gateway then makes a request on the client's behalf, which is the textbook SSRF: the URL passes the same
rule as provider base URLs (proxy/ssrf.py, checked at connect time, so DNS rebinding does not help), only
http(s) is fetched, redirects are not followed, the download is capped at DS2API_IMAGE_MAX_BYTES and bounded
in time, and the answer must say it is an image. Remote providers receive image URLs as they are and fetch
them themselves.
"""

import asyncio

import aiohttp
from django.conf import settings

from proxy.canonical import GatewayError
from proxy.ssrf import GuardedResolver, refused_literal

DEFAULT_MAX_BYTES = 20 * 2**20
TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5, sock_read=10)


def max_image_bytes() -> int:
    return int(getattr(settings, "DS2API_IMAGE_MAX_BYTES", DEFAULT_MAX_BYTES))


def _bad(message: str) -> GatewayError:
    return GatewayError("invalid_request", message, param="messages")


async def fetch_image(url: str, *, max_bytes: int | None = None) -> tuple[bytes, str]:
    """(bytes, media type) of the image at `url`, or a 400 GatewayError saying why not."""
    limit = max_bytes if max_bytes is not None else max_image_bytes()
    if not url.lower().startswith(("http://", "https://")):
        raise _bad("an image URL must be http(s) or a data: URL")
    reason = refused_literal(url)
    if reason:
        raise _bad(f"image URL refused: its host is {reason}")
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(), limit=1)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
            async with session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise _bad(f"could not fetch the image URL (HTTP {response.status}; redirects are not followed)")
                media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if not media_type.startswith("image/"):
                    raise _bad(f"the image URL did not return an image ({media_type or 'no content type'})")
                if response.content_length is not None and response.content_length > limit:
                    raise _bad(f"the image at the URL exceeds {limit} bytes")
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > limit:  # a missing or lying Content-Length is caught here
                        raise _bad(f"the image at the URL exceeds {limit} bytes")
                    chunks.append(chunk)
                return b"".join(chunks), media_type
    except aiohttp.ClientConnectionError as exc:
        raise _bad(f"could not fetch the image URL: {exc}") from None
    except (aiohttp.ClientError, TimeoutError):
        raise _bad("could not fetch the image URL") from None


def fetch_image_blocking(url: str, *, max_bytes: int | None = None) -> tuple[bytes, str]:
    """`fetch_image` for code running in a worker thread (e.g. a local model's prompt preparation)."""
    return asyncio.run(fetch_image(url, max_bytes=max_bytes))
