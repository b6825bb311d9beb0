"""The encoder engine: dynamic batching for embedding (and other encoder) models.

Requests from many clients flow through two stages that overlap, each on its own
thread so the event loop never blocks:

    embed() -> incoming --[tokenise: 1 thread]--> ready pool --[cut batch, forward: 1 thread]--> results

* While batch N runs its forward pass, everything that arrived meanwhile is tokenised,
  so batch N+1 is cut from exactly-measured inputs the moment the model is free.
* ``workers`` forward passes may run at once (each on its own thread, sharing the weights),
  with the cores split between them: on a small machine two single-threaded passes beat
  one two-threaded pass, and the event loop's work slows one of them instead of stalling
  both threads of a shared parallel region.
* Batches are cut by ``cut_batch``: similar lengths together, bounded by the model's
  ``max_batch_size`` and ``max_batch_tokens``, oldest input always included.
* When the model frees up with a part-filled batch, the engine waits up to
  ``batch_wait_s`` for more, but only while inputs are arriving (a tokenisation is in
  flight, or inputs have come in the last moments); an idle server answers at once.
* The queue is bounded: past ``queue_size`` queued inputs ``embed`` raises Overloaded
  (429 with Retry-After). A caller that is cancelled (client gone) leaves its inputs to be
  dropped before they reach the model.
* A failing input fails its own request only: a batch that raises is re-run one input
  at a time so the others still get their answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from inferd.backends.base import EncoderBackend, EncoderInput, Tokenized
from inferd.catalog import ModelRef
from inferd.engine.base import Engine, EngineObserver, EngineState, NullObserver
from inferd.engine.batching import CostCurve, calibrate, cut_batch
from inferd.errors import (
    EngineError,
    InferdError,
    InputTooLarge,
    InvalidRequest,
    ModelUnavailable,
    Overloaded,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_ARRIVAL_MEMORY_S = 0.05  # inputs seen within this long count as "still arriving"


@dataclass(slots=True)
class EncodeResult:
    rows: list  # one per input: what the backend's forward gave for it (a vector for embedding models)
    input_tokens: int
    details: list | None = None  # one per input: ``Tokenized.detail`` (token offsets, ...), when kept

    @property
    def embeddings(self) -> np.ndarray:
        """The rows as one float32 array [n_inputs, dimensions] (models with one vector a row)."""
        return np.stack(self.rows)


class _Job:
    __slots__ = ("inputs", "future", "rows", "remaining", "tokens", "details")

    def __init__(self, inputs: Sequence[EncoderInput], future: asyncio.Future):
        self.inputs = inputs
        self.future = future
        self.rows: list[Any] = [None] * len(inputs)
        self.remaining = len(inputs)
        self.tokens = 0
        self.details: list | None = None

    @property
    def alive(self) -> bool:
        return not self.future.done()

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class _Item:
    __slots__ = ("job", "index", "ids", "length")

    def __init__(self, job: _Job, index: int, piece: Tokenized):
        self.job = job
        self.index = index
        self.ids = piece.ids
        self.length = piece.length


def _item_length(item: _Item) -> int:
    return item.length


def cut_texts(tokenizer, texts: list[str], limit: int) -> list[str]:
    out = []
    for text, ids in zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True):
        out.append(text if len(ids) <= limit else tokenizer.decode(ids[:limit]))
    return out


class EncoderModel(Engine):
    """What the serving layer sees of an encoder model, here or in a Ray Serve replica:
    ``backend`` for its facts (``modalities``, ``normalizes``, ``vocab_size``, ``dimensions``;
    rerankers ``scoring`` and ``to_unit``), ``embed``, ``cut`` and ``answer``."""

    backend: Any

    async def answer(self, inputs: Sequence[EncoderInput], finish: Callable[[Any, EncodeResult], T],
                     check: Callable[[Any], None] | None = None) -> T:
        """A request's answer made where the model is: ``check`` that the backend can take the
        inputs, their rows (``embed``), then ``finish`` them with what only the backend holds
        (labels, tokenizer, post-processing). In a Ray Serve replica all of it runs there, so
        ``finish`` and ``check`` travel: module-level functions, or ``functools.partial`` of them."""
        if check is not None:
            check(self.backend)
        return finish(self.backend, await self.embed(inputs))

    @abstractmethod
    async def embed(self, inputs: Sequence[EncoderInput]) -> EncodeResult:
        """One row per input, batched with other requests' inputs; raises Overloaded when full."""

    @abstractmethod
    async def cut(self, texts: Sequence[str], limit: int) -> list[str]:
        """Each text cut to its first ``limit`` tokens (Cohere v2's max_tokens_per_doc)."""


class EncoderEngine(EncoderModel):
    def __init__(
        self,
        ref: ModelRef,
        backend: EncoderBackend,
        *,
        too_long: str = "truncate",
        batch_wait_s: float = 0.003,
        observer: EngineObserver | None = None,
        workers: int = 1,
    ):
        super().__init__(ref)
        self.backend = backend
        self.limits = ref.spec.limits
        self.too_long = too_long
        self.batch_wait_s = batch_wait_s
        self.observer = observer or NullObserver()
        self._incoming: list[_Job] = []
        self._ready: list[_Item] = []
        self._queued = 0  # inputs accepted and not yet through the model
        self._incoming_event = asyncio.Event()
        self._ready_event = asyncio.Event()
        self._tokenizing = False
        self._last_arrival = 0.0
        self._last_delivery = 0.0
        self.fill_share = float(backend.fill_share)
        self._throughput = 0.0  # inputs/s, smoothed, for Retry-After
        self._cost: CostCurve | None = None  # forward-pass cost by size, measured at start-up
        self._running = 0  # forward passes running now (of ``workers``)
        self._tasks: list[asyncio.Task] = []
        self.workers = max(1, workers)
        self._pools()

    def _pools(self) -> None:
        self._tokenize_pool = ThreadPoolExecutor(1, thread_name_prefix=f"tok-{self.ref.spec.id}")
        self._forward_pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"fwd-{self.ref.spec.id}")

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        if self._forward_pool._shutdown:  # started again after a stop (the pool restarts a failed engine)
            self._pools()
        try:
            await loop.run_in_executor(self._forward_pool, self.backend.load)
            self._cost = await loop.run_in_executor(self._forward_pool, self._calibrate)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
            self.state = EngineState.FAILED
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", self.name, self.error)
            return
        self._tasks = [asyncio.create_task(self._tokenize_loop(), name=f"tokenize:{self.name}")] + [
            asyncio.create_task(self._forward_loop(), name=f"forward-{i}:{self.name}") for i in range(self.workers)
        ]
        self.state = EngineState.READY
        log.info(
            "model %s ready in %.1f s; forward pass ms by padded tokens: %s",
            self.ref.key, time.perf_counter() - started,
            ", ".join(f"{tokens}={seconds * 1000:.0f}" for tokens, seconds in self._cost.points),
        )

    def _calibrate(self) -> CostCurve:
        """Warm the model up and measure what a forward pass costs by size (see ``calibrate``):
        texts of ``tokens`` tokens, or for a model of images, images (each weighs its cost)."""
        probe = self.backend.tokenize([self.backend.probe_input()])[0]
        if probe.cost is None:
            length, context = min(16, self.backend.context_length), self.backend.context_length

            def batch(count: int, tokens: int) -> list:
                return [probe.ids[: tokens - 1] + probe.ids[-1:]] * count
        else:
            length = context = probe.cost

            def batch(count: int, tokens: int) -> list:
                return [probe.ids] * count

        def run(count: int, tokens: int) -> float:
            inputs = batch(count, tokens)
            started = time.perf_counter()
            self.backend.forward(inputs)
            return time.perf_counter() - started

        run(1, length)  # the first pass is slow everywhere; not measured
        most = min(self.limits.max_batch_tokens, self.limits.max_batch_size * context, 4096)
        return calibrate(run, max_tokens=max(most, length), probe_length=length)

    async def stop(self) -> None:
        self.state = EngineState.STOPPED
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        gone = ModelUnavailable(f"model {self.name} is shutting down")
        for job in self._incoming:
            job.fail(gone)
        for item in self._ready:
            item.job.fail(gone)
        self._incoming.clear()
        self._ready.clear()
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        self._forward_pool.shutdown(wait=True, cancel_futures=True)
        self.backend.close()

    def check(self) -> str | None:
        for task in self._tasks:
            if task.done():
                exc = None if task.cancelled() else task.exception()
                return f"its {task.get_name().split(':')[0]} loop stopped" + (f": {exc!r}" if exc else "")
        return None

    def stats(self) -> dict:
        return {**super().stats(), "queued": self._queued}

    # ------------------------------------------------------------------ the call
    async def embed(self, inputs: Sequence[EncoderInput]) -> EncodeResult:
        self.ensure_ready()
        if not inputs:
            raise InvalidRequest("no inputs", param="input")
        if len(inputs) > self.limits.queue_size:
            raise InputTooLarge(f"{len(inputs)} inputs in one request can never be queued at once: model "
                                f"{self.name} queues at most {self.limits.queue_size}", param="input")
        if self._queued + len(inputs) > self.limits.queue_size:
            raise Overloaded(
                f"model {self.name} is overloaded ({self._queued} inputs queued); retry later",
                retry_after=self._retry_after(),
            )
        future = asyncio.get_running_loop().create_future()
        job = _Job(inputs, future)
        self._queued += len(inputs)
        self._incoming.append(job)
        self._incoming_event.set()
        self.observer.queue_depth(self.name, self._queued)
        try:
            rows = await future
        finally:
            if job.remaining:  # cancelled or failed: its inputs leave the queue count
                self._queued -= job.remaining
                job.remaining = 0
                self.observer.queue_depth(self.name, self._queued)
        return EncodeResult(rows, job.tokens, job.details)

    async def cut(self, texts: Sequence[str], limit: int) -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(
            self._tokenize_pool, cut_texts, self.backend.tokenizer, list(texts), limit)

    def _retry_after(self) -> float:
        if self._throughput <= 0:
            return 1.0
        return max(1.0, math.ceil(self._queued / self._throughput))

    # ------------------------------------------------------------------ stage 1: tokenise
    async def _tokenize_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._incoming_event.wait()
            self._incoming_event.clear()
            jobs = [job for job in self._incoming if job.alive]
            self._incoming = []
            if not jobs:
                continue
            self._tokenizing = True
            try:
                flat = [value for job in jobs for value in job.inputs]
                try:
                    tokenized = await loop.run_in_executor(self._tokenize_pool, self.backend.tokenize, flat)
                except Exception:  # noqa: BLE001 - isolate the input that broke it
                    tokenized = await self._tokenize_each(jobs)
            finally:
                self._tokenizing = False
            self._admit(jobs, tokenized)

    async def _tokenize_each(self, jobs: list[_Job]) -> list[Tokenized | None]:
        loop = asyncio.get_running_loop()
        out: list[Tokenized | None] = []
        for job in jobs:
            try:
                out.extend(await loop.run_in_executor(self._tokenize_pool, self.backend.tokenize, job.inputs))
            except Exception as exc:  # noqa: BLE001
                job.fail(InvalidRequest(f"the input could not be tokenised: {exc}", param="input"))
                out.extend([None] * len(job.inputs))
        return out

    def _admit(self, jobs: list[_Job], tokenized: Sequence[Tokenized | None]) -> None:
        context = self.backend.context_length
        position = 0
        admitted = 0
        for job in jobs:
            pieces = tokenized[position : position + len(job.inputs)]
            position += len(job.inputs)
            if not job.alive:
                continue
            if self.too_long == "error":
                longest = max(piece.original_length for piece in pieces)
                if longest > context:
                    job.fail(InputTooLarge(
                        f"an input has {longest} tokens; model {self.name} takes at most {context}",
                        param="input",
                    ))
                    continue
            job.tokens = sum(piece.length for piece in pieces)
            if pieces and pieces[0].detail is not None:
                job.details = [piece.detail for piece in pieces]
            self._ready.extend(_Item(job, i, piece) for i, piece in enumerate(pieces))
            admitted += len(pieces)
        if admitted:
            self._last_arrival = time.perf_counter()
            self._ready_event.set()

    # ------------------------------------------------------------------ stage 2: forward
    async def _forward_loop(self) -> None:
        loop = asyncio.get_running_loop()
        limits = self.limits
        window = limits.max_batch_size * 4
        while True:
            if not self._ready:
                self._ready_event.clear()
                await self._ready_event.wait()
            await self._fill()
            self._ready = [item for item in self._ready if item.job.alive]
            if not self._ready:
                continue
            # workers not running a pass (this one among them): with another one free, what is
            # pending is cut for two passes side by side rather than one after the other
            batch, self._ready = cut_batch(
                self._ready, _item_length, limits.max_batch_size, limits.max_batch_tokens, window,
                cost=self._cost, lanes=self.workers - self._running,
            )
            started = time.perf_counter()
            self._running += 1
            try:
                vectors = await loop.run_in_executor(self._forward_pool, self.backend.forward, [it.ids for it in batch])
            except asyncio.CancelledError:  # the engine is stopping: nobody waits forever
                for item in batch:
                    item.job.fail(ModelUnavailable(f"model {self.name} is shutting down"))
                raise
            except Exception:  # noqa: BLE001 - find the input that broke it; the rest still answer
                await self._forward_each(batch)
                continue
            finally:
                self._running -= 1
            elapsed = time.perf_counter() - started
            self._deliver(batch, vectors)
            rate = len(batch) / max(elapsed, 1e-6)
            self._throughput = rate if self._throughput == 0 else 0.8 * self._throughput + 0.2 * rate
            self.observer.batch_done(self.name, len(batch), sum(it.length for it in batch), elapsed)

    async def _fill(self) -> None:
        """Under load, give a part-filled batch a moment to fill; when idle, go at once. A backend
        whose inputs cost much less in larger batches (``fill_share``: text generation) waits up to
        that share of the batch's own cost, and counts the clients it has just answered as arriving
        (a client that got its answer sends its next request a moment later)."""
        target = self.limits.max_batch_size
        if len(self._ready) >= target or self.batch_wait_s <= 0:
            return
        wait, share = self.batch_wait_s, self.fill_share
        if share and self._cost is not None:
            wait = max(wait, share * self._cost(sum(item.length for item in self._ready[:target])))
        deadline = time.perf_counter() + wait
        while len(self._ready) < target:
            now = time.perf_counter()
            arriving = self._tokenizing or self._incoming or (
                now - self._last_arrival < _ARRIVAL_MEMORY_S and len(self._ready) > 1
            ) or (share and now - self._last_delivery < wait)
            remaining = deadline - time.perf_counter()
            if not arriving or remaining <= 0:
                return
            self._ready_event.clear()
            try:
                await asyncio.wait_for(self._ready_event.wait(), remaining)
            except TimeoutError:
                return

    async def _forward_each(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        for item in batch:
            if not item.job.alive:
                continue
            try:
                vectors = await loop.run_in_executor(self._forward_pool, self.backend.forward, [item.ids])
            except Exception as exc:  # noqa: BLE001
                log.exception("model %s failed on one input", self.name)
                error = exc if isinstance(exc, InferdError) else EngineError(f"the model failed on this input: {exc}")
                item.job.fail(error)
                continue
            self._deliver([item], vectors)

    def _deliver(self, batch: list[_Item], vectors: np.ndarray) -> None:
        done = 0
        for item, row in zip(batch, vectors, strict=True):
            job = item.job
            if not job.alive:
                continue
            job.rows[item.index] = row
            job.remaining -= 1
            done += 1
            if job.remaining == 0:
                job.future.set_result(job.rows)
        self._queued -= done
        self._last_delivery = time.perf_counter()
        self.observer.queue_depth(self.name, self._queued)
