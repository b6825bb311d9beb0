"""The image engine on the tiny random-weight pipeline: requests with the same size and steps
share a call of the pipeline, others do not; the queue bound; a request that leaves is dropped;
a failing request fails alone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from inferd.backends.base import ImageBatchKey, ImageRequest
from inferd.backends.diffusers_images import DiffusersBackend
from inferd.catalog import load_catalog
from inferd.catalog.catalog import Catalog
from inferd.engine.images import ImageEngine
from inferd.errors import EngineError, Overloaded
from tests.conftest import TEST_CACHE


class Batches:
    def __init__(self):
        self.sizes = []

    def batch_done(self, model, size, tokens, seconds):
        self.sizes.append(size)

    def queue_depth(self, model, depth):
        pass

    def running(self, model, sequences):
        pass


class Failing(DiffusersBackend):
    """The real pipeline, which fails any batch holding the prompt "boom" (a request it cannot draw)."""

    def generate(self, key, requests, stop):
        if any(r.prompt == "boom" for r in requests):
            raise RuntimeError("cannot draw this")
        return super().generate(key, requests, stop)


class Held(DiffusersBackend):
    """The real pipeline, which holds a batch with the prompt "hold" until ``release`` is set:
    the queue tests know the batch is running, however fast or slow the machine."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.running, self.release = threading.Event(), threading.Event()

    def generate(self, key, requests, stop):
        if any(r.prompt == "hold" for r in requests):
            self.running.set()
            assert self.release.wait(60)
        return super().generate(key, requests, stop)


def make(queue_size=64, max_batch_size=8, backend_class=DiffusersBackend) -> ImageEngine:
    spec = next(s for s in load_catalog() if s.id == "inferd/tiny-sd-random")
    spec = spec.model_copy(update={"limits": spec.limits.model_copy(update={"queue_size": queue_size,
                                                                            "max_batch_size": max_batch_size})})
    ref = next(Catalog([spec]).refs())
    backend = backend_class(spec, ref.version.source, dict(spec.options), threads=2, cache_dir=TEST_CACHE)
    return ImageEngine(ref, backend, Batches())


@pytest.fixture(scope="module")
async def engine():
    engine = make(backend_class=Failing)
    await engine.start()
    assert engine.error is None, engine.error
    yield engine
    await engine.stop()


KEY = ImageBatchKey("text", 64, 64, 2, 7.5)


async def test_same_key_shares_a_batch_other_keys_do_not(engine):
    engine.observer.sizes.clear()
    other = ImageBatchKey("text", 96, 64, 2, 7.5)
    results = await asyncio.gather(*(engine.generate(KEY, ImageRequest(f"picture {i}", 1, i)) for i in range(5)),
                                   engine.generate(other, ImageRequest("wide", 2, 0)))
    assert [len(r) for r in results] == [1, 1, 1, 1, 1, 2]
    assert results[5][0].width == 96 and results[0][0].png.startswith(b"\x89PNG")
    assert sorted(engine.observer.sizes) == [2, 5]
    # each request its own image
    assert len({r[0].png for r in results[:5]}) == 5


async def test_a_batch_is_at_most_max_batch_size_images(engine):
    engine.observer.sizes.clear()
    await asyncio.gather(*(engine.generate(KEY, ImageRequest("two", 2, i)) for i in range(6)))
    assert sorted(engine.observer.sizes) == [4, 8]


async def test_a_failing_request_fails_alone(engine):
    results = await asyncio.gather(engine.generate(KEY, ImageRequest("fine", 1, 1)),
                                   engine.generate(KEY, ImageRequest("boom", 1, 2)),
                                   engine.generate(KEY, ImageRequest("also fine", 1, 3)), return_exceptions=True)
    assert isinstance(results[1], EngineError)
    assert len(results[0]) == 1 and len(results[2]) == 1


async def test_full_queue_429_and_a_request_that_leaves_is_dropped():
    engine = make(queue_size=2, max_batch_size=1, backend_class=Held)
    await engine.start()
    backend = engine.backend
    try:
        key = ImageBatchKey("text", 64, 64, 2, 7.5)
        engine.observer.sizes.clear()
        first = asyncio.create_task(engine.generate(key, ImageRequest("hold", 1, 1)))
        assert await asyncio.to_thread(backend.running.wait, 60)  # running now, off the queue
        queued = [asyncio.create_task(engine.generate(key, ImageRequest(f"q{i}", 1, i))) for i in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await engine.generate(key, ImageRequest("one too many", 1, 9))
        queued[0].cancel()
        await asyncio.gather(queued[0], return_exceptions=True)
        backend.release.set()
        assert len(await first) == 1 and len(await queued[1]) == 1
        assert engine.observer.sizes == [1, 1]  # the cancelled request never ran
    finally:
        backend.release.set()
        await engine.stop()
