"""The speech engine: speech to text for many requests at once.

A request's audio is decoded (16 kHz mono), cut into chunks of speech of up to 30 s (voice
activity) and turned into features on the engine's preparation threads, and its chunks go to
one queue shared by every request. A scheduler thread takes the oldest chunk and, with it, up
to ``max_batch_size`` waiting chunks that decode the same way (temperature, and for whisper the
length of the initial prompt), and runs them through the model in one pass, whichever requests
they come from; while requests are still preparing chunks, a part-filled batch waits for them
(up to ``BATCH_WAIT_S``). Each request keeps at most two batches' worth of chunks queued (an
hour of audio does not hold its features all at once; alone, it still fills every batch) and
receives its chunks' text in order, as soon as each is done; a request that leaves has its
waiting chunks dropped. Queued chunks past ``queue_size`` answer 429.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from dataclasses import dataclass

import numpy as np

from inferd.backends.base import ChunkText, SpeechChunk, SpeechRecognitionBackend
from inferd.catalog import ModelRef
from inferd.engine.base import EngineObserver
from inferd.engine.queued import Job, QueuedEngine
from inferd.errors import EngineError, InvalidRequest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SpeechRequest:
    audio: np.ndarray | Callable[[], np.ndarray]  # float32, 16 kHz mono; or what decodes it (run by the engine)
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    words: bool = False
    vad: bool = True


@dataclass(slots=True)
class Transcribed:
    """One chunk's text, times in the original audio's seconds."""

    language: str
    language_probability: float
    segments: list[dict]


@dataclass(slots=True)
class _Job(Job):
    chunk: SpeechChunk | None = None
    key: tuple = ()  # jobs with one key decode the same way: they may share a batch


class SpeechEngine(QueuedEngine):
    unit = "chunks of audio"
    # how long a part-filled batch waits for chunks that requests are still preparing (decoding,
    # cutting, features): a pass over 30-s chunks costs seconds, and one chunk alone costs twice
    # per chunk what a batch of 16 does
    BATCH_WAIT_S = 1.0

    def __init__(self, ref: ModelRef, backend: SpeechRecognitionBackend, observer: EngineObserver | None = None):
        super().__init__(ref, backend, observer, workers=1)  # one batch at a time, on every core
        self.max_batch_size = ref.spec.limits.max_batch_size
        # decoding, cutting and features: a thread per core (a part-filled batch waits for them, so
        # the cores are theirs meanwhile; later, a chunk's features cost ~3 % of its decoding)
        self._prepare = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix=f"speech-prepare:{ref.spec.id}")
        self._preparing = 0  # requests preparing chunks now (the lock guards it)

    @contextmanager
    def _getting_ready(self):
        with self._cond:
            self._preparing += 1
        try:
            yield
        finally:
            with self._cond:
                self._preparing -= 1
                self._cond.notify_all()

    def _hold_back(self) -> float:
        live = sum(not job.cancelled for job in self._queue)
        return self.BATCH_WAIT_S if self._preparing and live < self.max_batch_size else 0.0

    @property
    def multilingual(self) -> bool:
        return self.backend.multilingual

    # --- requests

    def check_request(self, request: SpeechRequest) -> None:
        if request.task == "translate" and not self.backend.multilingual:
            raise InvalidRequest(f"model {self.name} is English-only and cannot translate; use a multilingual "
                                 "whisper model", param="model")
        if request.language is not None and self.backend.multilingual and request.language not in self.backend.languages:
            raise InvalidRequest(f"unknown language {request.language!r}", param="language")

    async def transcribe(self, request: SpeechRequest) -> AsyncIterator[Transcribed]:
        """Each chunk's text, in order, as soon as it is decoded."""
        self.ensure_ready()
        self.check_request(request)
        language = request.language if self.backend.multilingual else "en"
        key = (request.temperature, self.backend.batch_key(request.prompt))
        loop = asyncio.get_running_loop()
        # decoding, cutting and features run on the engine's preparation threads; meanwhile a
        # part-filled batch waits for them
        window: deque[_Job] = deque()
        try:
            with self._getting_ready():
                if callable(request.audio):
                    request.audio = await loop.run_in_executor(self._prepare, request.audio)
                planned, speech = await loop.run_in_executor(self._prepare, partial(self.backend.chunk, request.audio,
                                                                                      vad=request.vad))
                pending = deque(planned)
                await self._refill(window, pending, request, key, language)
            while pending or window:
                # up to two batches queued: a full batch by a request alone while the last one decodes
                if pending and len(window) <= self.max_batch_size:
                    with self._getting_ready():
                        await self._refill(window, pending, request, key, language)
                job = window.popleft()
                text: ChunkText = await job.done
                yield Transcribed(text.language, text.language_probability, self.backend.restore(text.segments, speech))
        finally:
            for job in window:  # the client left (or a chunk failed): the rest is not decoded
                job.cancelled = True

    async def _refill(self, window: deque, pending: deque, request: SpeechRequest, key: tuple, language) -> None:
        loop = asyncio.get_running_loop()
        plans = [pending.popleft() for _ in range(min(2 * self.max_batch_size - len(window), len(pending)))]
        if not plans:
            return
        features = await loop.run_in_executor(
            self._prepare, lambda: [self.backend.features(request.audio, p) for p in plans])
        window.extend(self._submit_all([
            _Job(loop, loop.create_future(), key=key,
                 chunk=SpeechChunk(f, p["offset"], p["duration"], request.task, language, request.prompt, request.words))
            for p, f in zip(plans, features, strict=True)]))

    # --- the scheduler thread

    def _take(self) -> list[_Job]:
        """The oldest live job and up to ``max_batch_size - 1`` more that decode the same way."""
        batch = super()._take()
        if not batch:
            return batch
        first, rest = batch[0], deque()
        while self._queue and len(batch) < self.max_batch_size:
            job = self._queue.popleft()
            if job.cancelled:
                continue
            (batch if job.key == first.key else rest).append(job)
        rest.extend(self._queue)
        self._queue = rest
        return batch

    def _work(self, batch: list[_Job]) -> list:
        started = time.perf_counter()
        try:
            results: list = list(self.backend.transcribe([j.chunk for j in batch], batch[0].key[0]))
        except Exception as exc:  # noqa: BLE001 - fail this batch's chunks; the engine goes on
            log.exception("speech batch of %d chunks failed on %s", len(batch), self.name)
            results = [EngineError(f"speech recognition failed: {exc}")] * len(batch)
        self.observer.batch_done(self.name, len(batch), int(sum(j.chunk.duration for j in batch)),
                                 time.perf_counter() - started)
        return results
