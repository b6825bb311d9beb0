"""The diffusers backend on the tiny random-weight pipeline the default catalog ships as configs:
built once from them, it draws at the size asked, the same seed gives the same pixels, each
image of a batch has its own seed, image to image and inpainting run on the same weights, a
scheduler can be chosen, and a batch whose requests all left stops early."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inferd.backends.base import ImageBatchKey, ImageRequest
from inferd.backends.diffusers_images import DiffusersBackend
from inferd.catalog import load_catalog
from tests.conftest import TEST_CACHE


def tiny_spec():
    return next(s for s in load_catalog() if s.id == "inferd/tiny-sd-random")


@pytest.fixture(scope="module")
def backend():
    spec = tiny_spec()
    b = DiffusersBackend(spec, spec.default_version.source, dict(spec.options), threads=2, cache_dir=TEST_CACHE)
    b.load()
    yield b
    b.close()


def pixels(made) -> np.ndarray:
    return np.asarray(made.image, dtype=np.int16)


def test_built_from_the_shipped_configs_with_random_weights(backend):
    assert (backend.path / "model_index.json").is_file() and (backend.path / "unet").is_dir()
    assert backend.default_steps == 2 and backend.size_multiple == 8
    assert backend.modes == {"text", "image", "inpaint"}
    assert "EulerDiscreteScheduler" in backend.schedulers and len(backend.schedulers) > 3
    assert 3 <= backend.prompt_tokens("a red fox") <= 77


def test_size_seed_and_batch(backend):
    key = ImageBatchKey("text", 96, 64, 2, 7.5)
    (alone,) = backend.generate(key, [ImageRequest("a red fox", 1, 42)], lambda: False)
    assert alone[0].image.size == (96, 64) and isinstance(alone[0].nsfw, bool)
    # in a batch with another request, request 2's two images use seeds 42 and 43
    first, second = backend.generate(key, [ImageRequest("a cat", 1, 7), ImageRequest("a red fox", 2, 42)],
                                     lambda: False)
    assert len(first) == 1 and len(second) == 2
    assert np.abs(pixels(second[0]) - pixels(alone[0])).max() <= 2  # the same seed draws the same image
    assert np.abs(pixels(second[0]) - pixels(second[1])).mean() > 5  # another seed another one
    (again,) = backend.generate(key, [ImageRequest("a red fox", 1, 42)], lambda: False)
    assert np.array_equal(pixels(again[0]), pixels(alone[0]))


def test_image_to_image_inpainting_and_schedulers(backend):
    source = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    key = ImageBatchKey("image", 64, 64, 4, 7.5, strength=0.5)
    (varied,) = backend.generate(key, [ImageRequest("", 1, 1, image=source)], lambda: False)
    assert varied[0].image.size == (64, 64)
    key = ImageBatchKey("inpaint", 64, 64, 2, 7.5)
    (painted,) = backend.generate(key, [ImageRequest("a hole", 1, 1, image=source, mask=mask)], lambda: False)
    assert painted[0].image.size == (64, 64)
    key = ImageBatchKey("text", 64, 64, 2, 7.5, scheduler="DDIMScheduler")
    (ddim,) = backend.generate(key, [ImageRequest("a red fox", 1, 42)], lambda: False)
    (euler,) = backend.generate(ImageBatchKey("text", 64, 64, 2, 7.5), [ImageRequest("a red fox", 1, 42)],
                                lambda: False)
    assert not np.array_equal(pixels(ddim[0]), pixels(euler[0]))


def test_a_batch_whose_requests_left_stops_at_the_next_step(backend):
    steps = []

    def stop():
        steps.append(1)
        return True

    key = ImageBatchKey("text", 64, 64, 20, 7.5)
    backend.generate(key, [ImageRequest("a red fox", 1, 1)], stop)
    assert len(steps) == 1  # asked after the first step, and no step ran after it
