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
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferd.backends.base import ChunkText, SpeechChunk, SpeechRecognitionBackend
from inferd.catalog import ModelRef
from inferd.engine.base import Engine, EngineObserver, EngineState, NullObserver
from inferd.errors import EngineError, InvalidRequest, ModelUnavailable, Overloaded

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
class _Job:
    chunk: SpeechChunk
    key: tuple  # jobs with one key decode the same way: they may share a batch
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future
    cancelled: bool = False
    queued_at: float = field(default_factory=time.monotonic)


class SpeechEngine(Engine):
    def __init__(self, ref: ModelRef, backend: SpeechRecognitionBackend, observer: EngineObserver | None = None):
        super().__init__(ref)
        self.backend = backend
        self.observer = observer or NullObserver()
        limits = ref.spec.limits
        self.max_batch_size = limits.max_batch_size
        self.queue_size = limits.queue_size
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.backend.load)
        except Exception as exc:  # noqa: BLE001 - reported through state
            log.exception("model %s failed to load", self.name)
            self.state, self.error = EngineState.FAILED, f"{type(exc).__name__}: {exc}"
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"speech:{self.name}", daemon=True)
        self._thread.start()
        self.state, self.error = EngineState.READY, None

    async def stop(self) -> None:
        with self._cond:
            self._stopping = True
            pending, self._queue = list(self._queue), deque()
            self._cond.notify_all()
        for job in pending:
            job.loop.call_soon_threadsafe(_settle, job.done, ModelUnavailable(f"model {self.name} stopped"))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None
        if self.state is not EngineState.FAILED:
            self.state = EngineState.STOPPED

    def check(self) -> str | None:
        if self._thread is not None and not self._thread.is_alive():
            return "its scheduler thread died"
        return None

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "queued_chunks": len(self._queue)}

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
                    window.append(self._submit(_Job(chunk, key, loop, loop.create_future())))
                job = window.popleft()
                text: ChunkText = await job.done
                yield Transcribed(text.language, text.language_probability, self.backend.restore(text.segments, speech))
        finally:
            for job in window:  # the client left (or a chunk failed): the rest is not decoded
                job.cancelled = True

    def _submit(self, job: _Job) -> _Job:
        with self._cond:
            if self._stopping:
                raise ModelUnavailable(f"model {self.name} is stopping")
            if len(self._queue) >= self.queue_size:
                raise Overloaded(f"model {self.name} has {len(self._queue)} chunks of audio waiting; retry shortly",
                                 retry_after=1)
            self._queue.append(job)
            self._cond.notify()
        self.observer.queue_depth(self.name, len(self._queue))
        return job

    # --- the scheduler thread

    def _take(self) -> list[_Job]:
        """The oldest live job and up to ``max_batch_size - 1`` more that decode the same way."""
        while self._queue and self._queue[0].cancelled:
            self._queue.popleft()
        if not self._queue:
            return []
        first = self._queue.popleft()
        batch, rest = [first], deque()
        while self._queue and len(batch) < self.max_batch_size:
            job = self._queue.popleft()
            if job.cancelled:
                continue
            (batch if job.key == first.key else rest).append(job)
        rest.extend(self._queue)
        self._queue = rest
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._queue:
                    self._cond.wait()
                if self._stopping:
                    return
                batch = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results: list[ChunkText | BaseException] = list(
                    self.backend.transcribe([j.chunk for j in batch], batch[0].key[0]))
            except Exception as exc:  # noqa: BLE001 - fail this batch's chunks; the engine goes on
                log.exception("speech batch of %d chunks failed on %s", len(batch), self.name)
                results = [EngineError(f"speech recognition failed: {exc}")] * len(batch)
            seconds = time.perf_counter() - started
            self.observer.batch_done(self.name, len(batch), int(sum(j.chunk.duration for j in batch)), seconds)
            self.observer.queue_depth(self.name, len(self._queue))
            for job, result in zip(batch, results, strict=True):
                job.loop.call_soon_threadsafe(_settle, job.done, result)


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
