"""Canonical image parts -> PIL images for a vision-language model.

Remote providers receive image URLs as they are; a local model has to fetch them itself, so URLs pass
the same SSRF guard as provider base URLs and downloads are size-capped.
"""

from __future__ import annotations

import base64
import binascii
import io
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.core.exceptions import ValidationError

from proxy.canonical import GatewayError, ImagePart
from routing.validators import validate_base_url

MAX_IMAGE_BYTES = 20 * 2**20
FETCH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def _bad(message: str) -> GatewayError:
    return GatewayError("invalid_request", message, param="messages")


def _fetch(url: str) -> bytes:
    parts = urlsplit(url)
    try:
        # The guard refuses query strings in base URLs; an image URL may carry one, the host is what counts.
        validate_base_url(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
    except ValidationError as exc:
        raise _bad(f"image URL refused: {'; '.join(exc.messages).replace('base_url', 'the URL')}") from None
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False) as client:
            with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise _bad(f"could not fetch the image URL (HTTP {response.status_code})")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise _bad(f"the image at the URL exceeds {MAX_IMAGE_BYTES} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
    except httpx.HTTPError:
        raise _bad("could not fetch the image URL") from None


def to_pil(part: ImagePart):
    """Decode one image part into an RGB PIL image; a broken image is the client's error (400)."""
    from PIL import Image, UnidentifiedImageError

    if part.data is not None:
        try:
            raw = base64.b64decode(part.data, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("an image's base64 data is not valid base64") from None
    elif part.url:
        raw = _fetch(part.url)
    else:
        raise _bad("an image part has neither data nor a URL")
    if len(raw) > MAX_IMAGE_BYTES:
        raise _bad(f"an image exceeds {MAX_IMAGE_BYTES} bytes")
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError):
        raise _bad("an image could not be decoded (supported: PNG, JPEG, GIF, WebP, ...)") from None
    return image.convert("RGB")
