"""Checks on image requests before they reach a model: sizes, counts, image units, and uploaded
images that are not images, are truncated, or are decompression bombs."""

from __future__ import annotations

import io
import zlib
import struct
from types import SimpleNamespace

import pytest
from PIL import Image

from inferd.backends.base import ImageBatchKey, ImageRequest
from inferd.catalog import load_catalog
from inferd.catalog.catalog import Catalog
from inferd.errors import InputTooLarge, InvalidRequest
from inferd.serving.image_inputs import decode_image
from inferd.serving.images import ImageQuery, ImageService, _quality_steps
from inferd.settings import Settings


def service(**overrides) -> ImageService:
    return ImageService(pool=None, meter=None, settings=Settings(**overrides))


BACKEND = SimpleNamespace(default_size=(512, 512), size_multiple=8)


def png(width: int, height: int, mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, format="PNG")
    return out.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` pixels, with a tiny body (a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_sizes():
    s = service(max_image_side=2048)
    assert s._size(ImageQuery(None, size="1024x768"), BACKEND) == (1024, 768)
    assert s._size(ImageQuery(None, size="auto"), BACKEND) == (512, 512)
    assert s._size(ImageQuery(None, width=256), BACKEND) == (256, 512)
    for bad in ("1000x1001", "1023x1024", "4096x4096", "0x512", "big", "12x", "-8x64", "99999999999x8"):
        with pytest.raises(InvalidRequest):
            s._size(ImageQuery(None, size=bad), BACKEND)


def test_quality_maps_to_steps():
    assert _quality_steps(None, 25) == 25 and _quality_steps("standard", 25) == 25
    assert _quality_steps("hd", 25) == 50 and _quality_steps("low", 2) == 1


def test_image_units_follow_size_and_steps():
    ref = next(Catalog([s for s in load_catalog() if s.id == "inferd/tiny-sd-random"]).refs())
    units = ImageService._units(ref, ImageBatchKey("text", 1024, 1024, 25, 7.5), ImageRequest("x", 2, 0), 5)
    assert units.images == 2.0 and units.input_tokens == 5
    units = ImageService._units(ref, ImageBatchKey("text", 512, 512, 25, 7.5), ImageRequest("x", 1, 0), 5)
    assert units.images == 0.25


def test_decode_image_refuses_what_is_not_a_whole_image():
    assert decode_image(png(20, 10), 10_000, "image").size == (20, 10)
    with pytest.raises(InvalidRequest, match="not an image"):
        decode_image(b"hello, this is text", 10_000, "image")
    with pytest.raises(InvalidRequest, match="not an image"):
        decode_image(b"", 10_000, "image")
    jpeg = io.BytesIO()
    Image.effect_noise((256, 256), 50).convert("RGB").save(jpeg, format="JPEG")
    with pytest.raises(InvalidRequest, match="truncated"):
        decode_image(jpeg.getvalue()[: len(jpeg.getvalue()) // 2], 1_000_000, "image")
    with pytest.raises(InputTooLarge):  # 30000 x 30000 claimed in 100 bytes: refused from the header
        decode_image(bomb_png(30000, 30000), 16_000_000, "image")
    with pytest.raises(InputTooLarge):
        decode_image(png(200, 200), 10_000, "mask")
