"""Canonical image parts -> PIL images for a vision-language model.

Remote providers receive image URLs as they are; a local model has to fetch them itself, so URLs pass
the same SSRF guard as provider base URLs and downloads are size-capped.
"""

from __future__ import annotations

import base64
import binascii
import io

from proxy.canonical import GatewayError, ImagePart
from proxy.image_fetch import fetch_image_blocking

MAX_IMAGE_BYTES = 20 * 2**20


def _bad(message: str) -> GatewayError:
    return GatewayError("invalid_request", message, param="messages")


def _fetch(url: str) -> bytes:
    # proxy/image_fetch.py checks the address actually dialled (metadata always refused, private ones unless
    # DS2API_ALLOW_PRIVATE_UPSTREAMS), follows no redirect and caps the download at DS2API_IMAGE_MAX_BYTES.
    return fetch_image_blocking(url)[0]


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
