"""What the speech and synthesis engines share: a model loaded off the loop, one bounded queue of
jobs from every request, and worker threads that take jobs from it and hand each result back to
the request's event loop. Subclasses say what a job is and what a worker does (``_work``)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from inferd.catalog import ModelRef
from inferd.engine.base import Engine, EngineObserver, EngineState, NullObserver, settle
from inferd.errors import ModelUnavailable, Overloaded

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future
    cancelled: bool = False  # its request left: skipped by the workers


class QueuedEngine(Engine):
    unit = "jobs"  # what the queue holds, in messages ("chunks of audio", "sentences")

    def __init__(self, ref: ModelRef, backend, observer: EngineObserver | None = None, workers: int = 1):
        super().__init__(ref)
        self.backend = backend
        self.observer = observer or NullObserver()
        self.queue_size = ref.spec.limits.queue_size
        self.workers = workers
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def _load(self) -> None:
        """Load the model (a worker thread; may take long)."""
        self.backend.load()

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._load)
        except Exception as exc:  # noqa: BLE001 - reported through state
            log.exception("model %s failed to load", self.name)
            self.state, self.error = EngineState.FAILED, f"{type(exc).__name__}: {exc}"
            return
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, name=f"{self.name}:{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        self.state, self.error = EngineState.READY, None

    async def stop(self) -> None:
        with self._cond:
            self._stopping = True
            pending, self._queue = list(self._queue), deque()
            self._cond.notify_all()
        for job in pending:
            job.loop.call_soon_threadsafe(settle, job.done, ModelUnavailable(f"model {self.name} stopped"))
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 30)
        self._threads = []
        if self.state is not EngineState.FAILED:
            self.state = EngineState.STOPPED

    def check(self) -> str | None:
        if any(not thread.is_alive() for thread in self._threads):
            return "a worker thread died"
        return None

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "queued": len(self._queue)}

    def _submit(self, job: Job) -> Job:
        """Queue one job, or 429 when ``queue_size`` are waiting."""
        return self._submit_all([job])[0]

    def _submit_all(self, jobs: list) -> list:
        """Queue jobs together (a worker that wakes finds them all), or none and 429 when they do
        not fit under ``queue_size``."""
        with self._cond:
            if self._stopping:
                raise ModelUnavailable(f"model {self.name} is stopping")
            if len(self._queue) + len(jobs) > self.queue_size:
                raise Overloaded(f"model {self.name} has {len(self._queue)} {self.unit} waiting; retry shortly",
                                 retry_after=1)
            self._queue.extend(jobs)
            self._cond.notify(len(jobs))
        self.observer.queue_depth(self.name, len(self._queue))
        return jobs

    def _hold_back(self) -> float:
        """Seconds a worker waits for more work before taking what is queued (the lock is held;
        asked again whenever the condition is notified): 0, take it now."""
        return 0.0

    def _take(self) -> list:
        """The next work from the queue (the lock is held): the oldest live job by default."""
        while self._queue:
            job = self._queue.popleft()
            if not job.cancelled:
                return [job]
        return []

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._queue:
                    self._cond.wait()
                deadline = time.monotonic() + self._hold_back()
                while not self._stopping and self._hold_back() and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                if self._stopping:
                    return
                jobs = self._take()
            if not jobs:
                continue
            results = self._work(jobs)
            self.observer.queue_depth(self.name, len(self._queue))
            for job, result in zip(jobs, results, strict=True):
                job.loop.call_soon_threadsafe(settle, job.done, result)

    def _work(self, jobs: list) -> list:
        """Each job's result, or the exception its request gets (never raises)."""
        raise NotImplementedError
