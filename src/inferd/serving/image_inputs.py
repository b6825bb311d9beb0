"""Images that arrive in requests: where their bytes come from (an upload, a data URL, base64, or
an http(s) URL when the ``fetch_image_urls`` setting allows fetching) and how they are decoded
(Pillow, the pixel count checked from the header first; the decompression-bomb guard stays on)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io

from inferd.backends.base import ImageInput
from inferd.errors import InputTooLarge, InvalidRequest
from inferd.settings import Settings


async def load_image(value, settings: Settings, param: str = "image") -> ImageInput:
    """A request's image, fetched or decoded from base64 and then decoded off the event loop."""
    data = await image_bytes(value, settings, param)
    return ImageInput(await asyncio.to_thread(decode_image, data, settings.max_image_pixels, param))


async def image_bytes(value, settings: Settings, param: str = "image") -> bytes:
    """An image's bytes from an upload (bytes), a ``data:`` URL, an http(s) URL or plain base64."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{param} must be an image: a file upload, a data URL or base64", param=param)
    if value.startswith(("http://", "https://")):
        if not settings.fetch_image_urls:
            raise InvalidRequest(f"{param}: this server does not fetch image URLs (the fetch_image_urls setting); "
                                 "send the image as a data URL, base64 or a file upload", param=param)
        return await _fetch(value, settings, param)
    data = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param} is neither a data URL nor base64", param=param) from None


async def _fetch(url: str, settings: Settings, param: str) -> bytes:
    import httpx

    limit = settings.max_body_bytes
    try:
        async with httpx.AsyncClient(timeout=settings.image_fetch_timeout_s, follow_redirects=False) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise InvalidRequest(f"{param}: fetching the URL answered {response.status_code}", param=param)
                out = bytearray()
                async for chunk in response.aiter_bytes():
                    out += chunk
                    if len(out) > limit:
                        raise InputTooLarge(f"{param}: the image at the URL is larger than {limit} bytes", param=param)
                return bytes(out)
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"{param}: the URL could not be fetched ({type(exc).__name__})", param=param) from None


def decode_image(data: bytes, max_pixels: int, param: str):
    """Bytes -> a loaded PIL image, or 400 (not an image, truncated, corrupt) / 413 (too many pixels),
    checked from the header before the pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InputTooLarge(f"the {param} has too many pixels", param=param) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidRequest(f"the {param} is not an image this server reads (PNG, JPEG, WebP, GIF, BMP)",
                             param=param) from None
    width, height = image.size
    if width * height > max_pixels:
        raise InputTooLarge(f"the {param} is {width}x{height}: more than {max_pixels} pixels", param=param)
    try:
        image.load()
    except Image.DecompressionBombError:
        raise InputTooLarge(f"the {param} has too many pixels", param=param) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise InvalidRequest(f"the {param} is truncated or corrupt", param=param) from None
    return image
