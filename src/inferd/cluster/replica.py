"""One replica of one model on Ray Serve: the model's engine, built and started exactly as in
one process (``engine.pool.build_engine``), behind the calls the ingress makes through the
deployment's handle. Ray Serve asks ``check_health`` every few seconds; a replica whose engine
can no longer serve (a dead loop or engine process) says so and Ray replaces it."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

from inferd.catalog import Catalog
from inferd.cluster.metrics import RayMetrics
from inferd.engine.base import EngineState
from inferd.engine.encoder import EncoderEngine
from inferd.engine.generation import GenerationEngine, GenerationRequest, SequenceDelta
from inferd.engine.pool import build_engine, freeze_heap
from inferd.errors import EngineError, InferdError
from inferd.settings import Settings

log = logging.getLogger(__name__)


class ModelReplica:
    async def __init__(self, key: str, catalog: Catalog, settings: Settings):  # type: ignore[misc]
        # Ray Serve awaits an async constructor on the replica's event loop, where the engine's
        # loops must run
        from ray import serve

        from inferd.observability.logs import configure_logging

        configure_logging(settings.log_level, settings.log_format)
        # Ray sets OMP_NUM_THREADS to the replica's CPUs (1 for a fraction): the engine's threads
        # are what one process would use (or num_cpus); vLLM's engine process inherits this
        os.environ["OMP_NUM_THREADS"] = str(settings.torch_threads or os.cpu_count() or 1)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.metrics = RayMetrics(self.replica)
        ref = next(r for r in catalog.refs() if r.key == key)
        self.engine = build_engine(ref, settings, self.metrics)
        await self.engine.start()
        if self.engine.state is not EngineState.READY:
            # Ray Serve retries the constructor, then marks the deployment unhealthy with this
            raise RuntimeError(f"model {key} failed to load: {self.engine.error}")
        freeze_heap()
        log.info("replica %s of %s ready", self.replica, key)

    def check_health(self) -> None:
        reason = self.engine.check()
        if reason is not None:
            raise RuntimeError(f"model {self.engine.ref.key}: {reason}")

    async def describe(self) -> tuple[str, dict[str, Any]]:
        """What the ingress's serving layer needs to know of the model (the same on every replica)."""
        engine = self.engine
        if isinstance(engine, GenerationEngine):
            # the tokenizer pickles: the ingress renders chat templates and counts tokens itself
            return self.replica, {"tokenizer": engine.tokenizer, "context_length": int(engine.context_length),
                                  "eos_token_ids": frozenset(engine.eos_token_ids)}
        if isinstance(engine, EncoderEngine):
            backend = engine.backend
            return self.replica, {
                "modalities": frozenset(backend.modalities), "normalizes": bool(backend.normalizes),
                "vocab_size": int(getattr(backend, "vocab_size", 0) or 0), "dimensions": int(backend.dimensions),
                "scoring": getattr(backend, "scoring", None)}
        raise TypeError(f"{type(engine).__name__} is not served on Ray Serve")

    async def stats(self) -> tuple[str, dict[str, Any]]:
        """The engine's own stats, and the batches it ran (how well the replica batches)."""
        return self.replica, {**self.engine.stats(), "batches": self.metrics.batches, "inputs": self.metrics.inputs}

    # --- the encoder engine (each answer says which replica gave it: the ingress counts them)

    async def embed_many(self, requests: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """Several requests' inputs (the ingress sends those of one turn together): each request's
        rows, or its error, batched by the engine with everything else in flight."""
        results = await asyncio.gather(*(self.engine.embed(inputs) for inputs in requests), return_exceptions=True)
        return self.replica, [_sendable(r) for r in results]

    async def cut(self, texts: Sequence[str], limit: int) -> tuple[str, list[str]]:
        return self.replica, await self.engine.cut(texts, limit)

    # --- a text-generation engine

    async def generate(self, request: GenerationRequest) -> AsyncIterator[tuple[str, list[SequenceDelta]]]:
        """The request's deltas, every delta ready at once in one item (a Ray item costs about
        what a delta does to make: under load one item carries a step of every sequence). The
        ingress cancelling the call (its client left) closes the engine's stream: the engine
        stops the request."""
        queue: asyncio.Queue = asyncio.Queue()
        end = object()

        async def pump() -> None:
            try:
                async with aclosing(self.engine.generate(request)) as stream:
                    async for delta in stream:
                        queue.put_nowait(delta)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                queue.put_nowait(exc)
                return
            queue.put_nowait(end)

        task = asyncio.create_task(pump())
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                deltas = [d for d in items if isinstance(d, SequenceDelta)]
                if deltas:
                    yield self.replica, deltas
                for item in items:
                    if isinstance(item, BaseException):
                        raise _sendable(item)
                    if item is end:
                        return
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __del__(self) -> None:  # noqa: D105 - Ray Serve awaits it when the replica stops
        await self.engine.stop()


def _sendable(result: Any) -> Any:
    """A result, an InferdError (pickled whole), or any other failure as an EngineError."""
    if isinstance(result, InferdError) or not isinstance(result, BaseException):
        return result
    if isinstance(result, asyncio.CancelledError):
        return EngineError("the call was cancelled")
    log.error("a request failed in the replica: %r", result)
    return EngineError(f"the model failed: {type(result).__name__}: {result}")
