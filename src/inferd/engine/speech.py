"""The speech engine: speech to text for many requests at once.

A request's audio is decoded (16 kHz mono), cut into chunks of speech of up to 30 s (voice
activity) and turned into features on the engine's preparation threads, and its chunks go to
one queue shared by every request. A scheduler thread takes the oldest chunk and, with it, up
to ``max_batch_size`` waiting chunks that decode the same way (temperature, and for whisper the
length of the initial prompt), and runs them through the model in one pass, whichever requests
they come from; while requests are still preparing chunks, the scheduler waits for half a batch
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
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferd.backends.base import ChunkText, SpeechChunk, SpeechRecognitionBackend
from inferd.catalog import ModelRef
from inferd.engine.base import Engine, EngineObserver
from inferd.engine.queued import Job, QueuedEngine
from inferd.errors import EngineError, InvalidRequest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SpeechRequest:
    # float32 16 kHz mono samples, or what decodes them block by block (the engine runs it)
    audio: np.ndarray | Callable[[], Iterator[np.ndarray]]
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    words: bool = False
    vad: bool = True
    seconds: float = 0.0  # of audio decoded so far (set by the engine)


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


class _Cutter:
    """A request's audio cut into chunks block by block, so a long file never lies whole in
    memory: each block joins what the last left over, voice activity is found in it, and the
    speech is grouped into chunks of at most ``chunk_seconds``; the last group of a block waits for
    the next block (its speech may go on). Chunks carry their features; times are kept in samples
    of the whole audio (``speech``) for ``restore``."""

    def __init__(self, backend: SpeechRecognitionBackend, blocks: Iterator[np.ndarray], request: SpeechRequest):
        self.backend = backend
        self.blocks = blocks
        self.request = request
        self.rate = backend.sampling_rate
        self.limit = backend.chunk_seconds * self.rate
        self.buffer = np.empty(0, np.float32)
        self.base = 0  # where the buffer starts in the whole audio (samples)
        self.speech: list[dict] = []  # the speech of every chunk cut so far (samples of the whole audio)
        self.spoken = 0  # samples of speech in those chunks
        self.ready: deque[tuple[dict, np.ndarray]] = deque()
        self.exhausted = False  # every block read, every chunk cut

    def take(self, n: int) -> list[tuple[dict, np.ndarray]]:
        """Up to ``n`` chunks, reading blocks as needed (a preparation thread)."""
        while len(self.ready) < n and not self.exhausted:
            block = next(self.blocks, None)
            if block is not None:
                self.request.seconds += len(block) / self.rate
            self._cut(block)
        return [self.ready.popleft() for _ in range(min(n, len(self.ready)))]

    def _cut(self, block: np.ndarray | None) -> None:
        last = block is None
        if not last:
            self.buffer = np.concatenate([self.buffer, block]) if self.buffer.size else block
        segments = self.backend.speech(self.buffer, vad=self.request.vad) if self.buffer.size else []
        groups, current, length = [], [], 0
        for piece in segments:
            size = piece["end"] - piece["start"]
            if current and length + size > self.limit:
                groups.append(current)
                current, length = [], 0
            current.append(piece)
            length += size
        if current:
            groups.append(current)
        if last:
            cut, self.exhausted = len(self.buffer), True
        elif groups:
            cut = groups.pop()[0]["start"]  # the last group may go on in the next block
        else:
            cut = max(0, len(self.buffer) - self.rate)  # no speech: keep a second, speech may start there
        for group in groups:
            length = sum(p["end"] - p["start"] for p in group)
            chunk = {"offset": self.spoken / self.rate, "duration": length / self.rate,
                     "segments": [{"start": p["start"] + self.base, "end": p["end"] + self.base} for p in group]}
            self.ready.append((chunk, self.backend.features(self.buffer, {"segments": group})))
            self.speech += chunk["segments"]
            self.spoken += length
        self.buffer = self.buffer[cut:]
        self.base += cut


class SpeechModel(Engine):
    """What the serving layer sees of a speech-recognition model, here or in a Ray Serve
    replica: ``backend`` for its facts (``multilingual``, ``languages``), ``check_request`` and
    ``transcribe``."""

    backend: Any

    def check_request(self, request: SpeechRequest) -> None:
        if request.task == "translate" and not self.backend.multilingual:
            raise InvalidRequest(f"model {self.name} is English-only and cannot translate; use a multilingual "
                                 "whisper model", param="model")
        if request.language is not None and self.backend.multilingual and request.language not in self.backend.languages:
            raise InvalidRequest(f"unknown language {request.language!r}", param="language")

    @abstractmethod
    def transcribe(self, request: SpeechRequest) -> AsyncIterator[Transcribed]:
        """Each chunk's text, in order, as soon as it is decoded; ``request.seconds`` counts the
        audio decoded so far."""


class SpeechEngine(QueuedEngine, SpeechModel):
    unit = "chunks of audio"
    # how long a part-filled batch waits for chunks that requests are still preparing (decoding,
    # cutting, features): a pass over 30-s chunks costs seconds, and one chunk alone costs twice
    # per chunk what a batch of 16 does
    BATCH_WAIT_S = 2.0

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
        # half a batch decodes nearly as fast per chunk as a whole one (one chunk alone: twice as
        # slow), and the rest of the batch prepares meanwhile
        return self.BATCH_WAIT_S if self._preparing and live < max(1, self.max_batch_size // 2) else 0.0

    # --- requests

    async def transcribe(self, request: SpeechRequest) -> AsyncIterator[Transcribed]:
        """Each chunk's text, in order, as soon as it is decoded."""
        self.ensure_ready()
        self.check_request(request)
        language = request.language if self.backend.multilingual else "en"
        key = (request.temperature, self.backend.batch_key(request.prompt))
        # decoding, cutting and features run on the engine's preparation threads, block by block;
        # meanwhile a part-filled batch waits for them
        blocks = request.audio() if callable(request.audio) else iter([request.audio])
        cutter = _Cutter(self.backend, blocks, request)
        window: deque[_Job] = deque()
        try:
            with self._getting_ready():
                await self._refill(window, cutter, key, language)
            while window:
                # up to two batches queued: a full batch by a request alone while the last one decodes
                if not cutter.exhausted and len(window) <= self.max_batch_size:
                    with self._getting_ready():
                        await self._refill(window, cutter, key, language)
                job = window.popleft()
                text: ChunkText = await job.done
                yield Transcribed(text.language, text.language_probability,
                                  self.backend.restore(text.segments, cutter.speech))
        finally:
            for job in window:  # the client left (or a chunk failed): the rest is not decoded
                job.cancelled = True
            close = getattr(blocks, "close", None)
            if close is not None:
                try:
                    close()  # the decoder's file
                except ValueError:  # still decoding on a preparation thread: it closes when collected
                    pass

    async def _refill(self, window: deque, cutter: _Cutter, key: tuple, language) -> None:
        loop = asyncio.get_running_loop()
        request = cutter.request
        cut = await loop.run_in_executor(self._prepare, cutter.take, 2 * self.max_batch_size - len(window))
        window.extend(self._submit_all([
            _Job(loop, loop.create_future(), key=key,
                 chunk=SpeechChunk(f, p["offset"], p["duration"], request.task, language, request.prompt, request.words))
            for p, f in cut]))

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
