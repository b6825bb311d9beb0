"""The synthesis engine: text to speech for many requests at once, streamed sentence by sentence.

A request's text is cut into sentences; its sentences join one queue shared by every request,
and ``workers`` threads (each running the model with its own share of the cores) take them
oldest first. A request keeps up to ``workers`` sentences queued, so one long text uses every
worker when it is alone and takes turns with the others when it is not; it receives its audio
in order, each sentence as soon as it is made. A request that leaves has its queued sentences
dropped; sentences queued past ``queue_size`` answer 429.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from inferd.backends.base import Voice
from inferd.engine.base import Engine
from inferd.engine.queued import Job, QueuedEngine
from inferd.errors import EngineError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job(Job):
    sentence: str = ""
    voice: str = ""
    speed: float = 1.0


class SynthesisModel(Engine):
    """What the serving layer sees of a text-to-speech model, here or in a Ray Serve replica."""

    @property
    @abstractmethod
    def voices(self) -> list[Voice]: ...

    @property
    @abstractmethod
    def sample_rate(self) -> int: ...

    @abstractmethod
    def speak(self, text: str, voice: str, speed: float = 1.0) -> AsyncIterator[np.ndarray]:
        """Each sentence's samples (mono int16 at ``sample_rate``), in order, as soon as each is made."""


class SynthesisEngine(QueuedEngine, SynthesisModel):
    unit = "sentences"

    def _load(self) -> None:
        self.backend.load()
        self.backend.synthesize("Hello.", self.backend.voices[0].id, 1.0)  # warm up

    @property
    def voices(self) -> list[Voice]:
        return self.backend.voices

    @property
    def sample_rate(self) -> int:
        return self.backend.sample_rate

    async def speak(self, text: str, voice: str, speed: float = 1.0) -> AsyncIterator[np.ndarray]:
        """Each sentence's samples (mono int16 at ``sample_rate``), in order, as soon as each is made."""
        self.ensure_ready()
        loop = asyncio.get_running_loop()
        pending = deque(self.backend.sentences(text))
        window: deque[_Job] = deque()
        try:
            while pending or window:
                while pending and len(window) < self.workers:
                    window.append(self._submit(_Job(loop, loop.create_future(), sentence=pending.popleft(), voice=voice,
                                                   speed=speed)))
                yield await window.popleft().done
        finally:
            for job in window:  # the client left (or a sentence failed): the rest is not made
                job.cancelled = True

    def _work(self, jobs: list[_Job]) -> list:
        job, started = jobs[0], time.perf_counter()
        try:
            result: object = self.backend.synthesize(job.sentence, job.voice, job.speed)
        except Exception as exc:  # noqa: BLE001 - fail this sentence's request; the engine goes on
            log.exception("synthesis failed on %s", self.name)
            result = EngineError(f"speech synthesis failed: {exc}")
        self.observer.batch_done(self.name, 1, len(job.sentence), time.perf_counter() - started)
        return [result]
