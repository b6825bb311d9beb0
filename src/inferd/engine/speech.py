"""The speech engine: speech to text for many requests at once.

A request's audio (16 kHz mono samples, decoded by the serving layer) is cut into chunks of
speech of up to 30 s (voice-activity detection, in a worker thread), and the chunks go to one
queue shared by every request. A scheduler thread takes the oldest chunk and, with it, up to
``max_batch_size`` waiting chunks that decode the same way (temperature, and for whisper the
length of the initial prompt), and runs them
through the model in one pass, whichever requests they come from. Each request keeps at most
``max_batch_size`` chunks queued (an hour of audio does not hold its features all at once) and
receives its chunks' text in order, as soon as each is done; a request that leaves has its
waiting chunks dropped. Queued chunks past ``queue_size`` answer 429.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
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
    audio: np.ndarray  # float32, 16 kHz mono
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

    def __init__(self, ref: ModelRef, backend: SpeechRecognitionBackend, observer: EngineObserver | None = None):
        super().__init__(ref, backend, observer, workers=1)  # one batch at a time, on every core
        self.max_batch_size = ref.spec.limits.max_batch_size

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
        planned, speech = await asyncio.to_thread(self.backend.chunk, request.audio, vad=request.vad)
        loop = asyncio.get_running_loop()
        window: deque[_Job] = deque()
        pending = deque(planned)
        try:
            while pending or window:
                while pending and len(window) < self.max_batch_size:
                    plan = pending.popleft()
                    features = await asyncio.to_thread(self.backend.features, request.audio, plan)
                    chunk = SpeechChunk(features, plan["offset"], plan["duration"], request.task, language,
                                        request.prompt, request.words)
                    window.append(self._submit(_Job(loop, loop.create_future(), chunk=chunk, key=key)))
                job = window.popleft()
                text: ChunkText = await job.done
                yield Transcribed(text.language, text.language_probability, self.backend.restore(text.segments, speech))
        finally:
            for job in window:  # the client left (or a chunk failed): the rest is not decoded
                job.cancelled = True

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
