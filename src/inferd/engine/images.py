"""The image engine: text to image (and image to image, inpainting) for many requests at once.

Requests join one bounded queue. One worker thread runs the pipeline on every core; it takes the
oldest request and every queued request with the same ``ImageBatchKey`` (mode, size, steps,
guidance, scheduler, strength) up to ``max_batch_size`` images, and generates them in one call:
a batch of 8 costs far less than 8 calls on the same cores. When fewer than a batch are queued
it waits up to ``BATCH_WAIT_S`` from the oldest request's arrival for more (clients that send
at once arrive a few milliseconds apart; a generation takes seconds).

A request whose client leaves is dropped if still queued; when every request of a running batch
has left, the pipeline stops at its next denoising step. Batching is per call, not per step
(measured in docs/benchmarks.md): a request that arrives mid-batch waits for the next one.
A batch that fails is run again one request at a time, so one bad request fails alone.
The images are checked for NSFW content and encoded as PNG on the worker, off the event loop.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

from inferd.backends.base import ImageBatchKey, ImageRequest
from inferd.engine.base import Engine
from inferd.engine.queued import Job, QueuedEngine
from inferd.errors import EngineError, InferdError

log = logging.getLogger(__name__)

BATCH_WAIT_S = 0.1


@dataclass(frozen=True, slots=True)
class Picture:
    png: bytes
    width: int
    height: int
    nsfw: bool


@dataclass(slots=True)
class _Job(Job):
    key: ImageBatchKey | None = None
    request: ImageRequest | None = None
    arrived: float = field(default_factory=time.monotonic)


class ImageModel(Engine):
    """What the serving layer sees of an image-generation model, here or in a Ray Serve replica:
    ``backend`` for its facts (``modes``, ``schedulers``, ``default_size``, ``default_steps``,
    ``default_guidance``, ``size_multiple``, ``prompt_tokens``) and ``generate``."""

    backend: Any

    @abstractmethod
    async def generate(self, key: ImageBatchKey, request: ImageRequest) -> list[Picture]:
        """The request's images (PNG), once its batch is done."""


class ImageEngine(QueuedEngine, ImageModel):
    unit = "requests"

    def __init__(self, ref, backend, observer=None, batch_wait_s: float = BATCH_WAIT_S):
        super().__init__(ref, backend, observer, workers=1)
        self.max_batch = ref.spec.limits.max_batch_size
        self.batch_wait_s = batch_wait_s

    def _load(self) -> None:
        self.backend.load()
        side = self.backend.size_multiple * 8
        warm = ImageBatchKey("text", side, side, 1, self.backend.default_guidance)
        self.backend.generate(warm, [ImageRequest("warm up", 1, 0)], lambda: False)

    async def generate(self, key: ImageBatchKey, request: ImageRequest) -> list[Picture]:
        """The request's images (PNG), once its batch is done."""
        self.ensure_ready()
        loop = asyncio.get_running_loop()
        job = self._submit(_Job(loop, loop.create_future(), key=key, request=request))
        try:
            return await job.done
        finally:  # done, or the client left (its future cancelled with it): not wanted any more
            job.cancelled = True

    def _live(self) -> list[_Job]:
        return [job for job in self._queue if not job.cancelled]

    def _hold_back(self) -> float:
        live = self._live()
        if not live:
            return 0.0
        head = live[0]
        if sum(job.request.count for job in live if job.key == head.key) >= self.max_batch:
            return 0.0
        return max(0.0, head.arrived + self.batch_wait_s - time.monotonic())

    def _take(self) -> list[_Job]:
        live = self._live()
        if not live:
            self._queue.clear()
            return []
        head, batch, images = live[0], [], 0
        for job in live:
            if job.key == head.key and (not batch or images + job.request.count <= self.max_batch):
                batch.append(job)
                images += job.request.count
        taken = {id(job) for job in batch}
        self._queue = type(self._queue)(job for job in live if id(job) not in taken)
        return batch

    def _work(self, jobs: list[_Job]) -> list:
        started = time.perf_counter()
        results = self._generate(jobs)
        if len(jobs) > 1 and any(isinstance(r, BaseException) for r in results):
            results = [self._generate([job])[0] for job in jobs]  # one bad request fails alone
        images = sum(job.request.count for job in jobs)
        self.observer.batch_done(self.name, images, images * jobs[0].key.steps, time.perf_counter() - started)
        return results

    def _generate(self, jobs: list[_Job]) -> list:
        try:
            made = self.backend.generate(jobs[0].key, [job.request for job in jobs],
                                         lambda: all(job.cancelled for job in jobs))
            return [[_png(m.image, m.nsfw) for m in images] for images in made]
        except Exception as exc:  # noqa: BLE001 - the requests fail; the engine goes on
            log.exception("image generation failed on %s", self.name)
            error = exc if isinstance(exc, InferdError) else EngineError(f"image generation failed: {exc}")
            return [error] * len(jobs)


def _png(image, nsfw: bool) -> Picture:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return Picture(out.getvalue(), image.width, image.height, nsfw)
