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

import numpy as np

from inferd.backends.base import ImageBatchKey, ImageRequest
from inferd.catalog import ModelRef
from inferd.cluster.feeds import FED, Failed, Outbox
from inferd.cluster.metrics import RayMetrics
from inferd.engine.base import EngineState
from inferd.engine.encoder import EncoderEngine
from inferd.engine.generation import Adapter, GenerationEngine, GenerationRequest, SequenceDelta
from inferd.engine.images import ImageEngine, Picture
from inferd.engine.pool import build_engine, freeze_heap
from inferd.engine.speech import SpeechEngine, SpeechRequest, Transcribed
from inferd.engine.synthesis import SynthesisEngine
from inferd.errors import EngineError, InferdError
from inferd.settings import Settings

log = logging.getLogger(__name__)


class ModelReplica:
    async def __init__(self, ref: ModelRef, settings: Settings):  # type: ignore[misc]
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
        self.engine = build_engine(ref, settings, self.metrics)
        self._outboxes: dict[str, Outbox] = {}  # an LLM's feeds, by the ingress's inbox
        self.fed = 0  # requests whose deltas went by a feed
        await self.engine.start()
        if self.engine.state is not EngineState.READY:
            # Ray Serve retries the constructor, then marks the deployment unhealthy with this
            raise RuntimeError(f"model {ref.key} failed to load: {self.engine.error}")
        freeze_heap()
        log.info("replica %s of %s ready", self.replica, ref.key)

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
        backend = getattr(engine, "backend", None)
        if isinstance(engine, EncoderEngine):
            # (the text and vision tasks' backends answer here: ``answer_many``)
            return self.replica, {
                "modalities": frozenset(backend.modalities), "normalizes": bool(getattr(backend, "normalizes", False)),
                "vocab_size": int(getattr(backend, "vocab_size", 0) or 0),
                "dimensions": int(getattr(backend, "dimensions", 0) or 0), "scoring": getattr(backend, "scoring", None)}
        if isinstance(engine, SpeechEngine):
            return self.replica, {"multilingual": bool(backend.multilingual),
                                  "languages": list(backend.languages) if backend.multilingual else []}
        if isinstance(engine, SynthesisEngine):
            return self.replica, {"voices": list(engine.voices), "sample_rate": int(engine.sample_rate)}
        if isinstance(engine, ImageEngine):
            return self.replica, {
                "default_size": tuple(backend.default_size), "default_steps": int(backend.default_steps),
                "default_guidance": float(backend.default_guidance), "size_multiple": int(backend.size_multiple),
                "modes": frozenset(backend.modes), "schedulers": tuple(backend.schedulers),
                "prompt_tokenizer": backend.prompt_tokenizer}
        raise TypeError(f"{type(engine).__name__} is not served on Ray Serve")

    async def stats(self) -> tuple[str, dict[str, Any]]:
        """The engine's own stats, and the batches it ran (how well the replica batches)."""
        return self.replica, {**self.engine.stats(), "batches": self.metrics.batches, "inputs": self.metrics.inputs,
                              "feeds": len(self._outboxes), "fed": self.fed}

    # --- the encoder engine (each answer says which replica gave it: the ingress counts them)

    async def embed_many(self, requests: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """Several requests' inputs (the ingress sends those of one turn together): each request's
        rows, or its error, batched by the engine with everything else in flight."""
        return await self._each(self.engine.embed(inputs) for inputs in requests)

    async def answer_many(self, requests: Sequence[tuple[Sequence[Any], Any, Any]]) -> tuple[str, list[Any]]:
        """Several requests' (inputs, finish, check) (``EncoderModel.answer``): each request's
        answer made here, where the backend's labels and post-processing are, or its error."""
        return await self._each(self.engine.answer(*r) for r in requests)

    async def _each(self, calls) -> tuple[str, list[Any]]:
        """Several requests' calls at once (the engine batches them): each one's result, or its error."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        return self.replica, [_sendable(r) for r in results]

    async def cut(self, texts: Sequence[str], limit: int) -> tuple[str, list[str]]:
        return self.replica, await self.engine.cut(texts, limit)

    # --- a text-generation engine

    async def generate(self, request: GenerationRequest,
                       inbox: str | None = None) -> AsyncIterator[tuple[str, list[SequenceDelta] | str]]:
        """The request's deltas, on this call until the calling ingress (``inbox``) has a feed open
        here — from the start, or from when one opens — then ``FED`` on the call and the rest, and
        the request's end, by the feed, the call ending with the request (``cluster.feeds``). The
        ingress cancelling the call (its client left) closes the engine's stream: the engine stops
        the request."""
        rid = request.request_id
        outbox = self._attach(inbox, rid)
        try:
            if outbox is None:
                async with aclosing(self._pumped(self.engine.generate(request))) as items:
                    async for item in items:
                        if outbox is None and (outbox := self._attach(inbox, rid)) is not None:
                            yield self.replica, FED
                        if outbox is None:
                            yield item
                        else:
                            for delta in item[1]:
                                outbox.put(rid, delta)
            else:
                yield self.replica, FED
                async with aclosing(self.engine.generate(request)) as deltas:
                    async for delta in deltas:
                        outbox.put(rid, delta)
            if outbox is not None:
                outbox.put(rid, None)
        except Exception as exc:  # noqa: BLE001 - on the call, as the ingress maps it
            raise _sendable(exc) from None
        finally:
            if outbox is not None:
                outbox.detach(rid)

    def _attach(self, inbox: str | None, rid: str) -> Outbox | None:
        """The feed open here from ``inbox`` with the request attached to it, if there is one."""
        outbox = self._outboxes.get(inbox) if inbox is not None else None
        if outbox is not None:
            outbox.attach(rid)
            self.fed += 1
        return outbox

    async def feed(self, inbox: str) -> AsyncIterator[tuple[str, Any]]:
        """An ingress's feed (``cluster.feeds``): True (opened; False: one from ``inbox`` is open
        here already, and this call ends), then batches of its requests' deltas until nothing has
        been attached for ``feeds.IDLE_S``."""
        if inbox in self._outboxes:
            yield self.replica, False
            return
        outbox = self._outboxes[inbox] = Outbox()
        try:
            yield self.replica, True
            async for batch in outbox.batches():
                yield self.replica, batch
        finally:
            outbox.closed = True
            if self._outboxes.get(inbox) is outbox:
                del self._outboxes[inbox]

    async def add_adapter(self, adapter: Adapter) -> tuple[str, None]:
        await self.engine.add_adapter(adapter)
        return self.replica, None

    async def remove_adapter(self, adapter: Adapter) -> tuple[str, None]:
        await self.engine.remove_adapter(adapter)
        return self.replica, None

    # --- speech, synthesis and images

    async def transcribe(self, request: SpeechRequest) -> AsyncIterator[tuple[str, list[tuple[Transcribed, float]]]]:
        """Each chunk's text with the seconds of audio decoded so far (the ingress meters them)."""
        async def pieces():
            async with aclosing(self.engine.transcribe(request)) as chunks:  # closed with this: its work stops
                async for piece in chunks:
                    yield piece, request.seconds

        async for item in self._pumped(pieces()):
            yield item

    async def speak(self, text: str, voice: str, speed: float) -> AsyncIterator[tuple[str, list[np.ndarray]]]:
        async for item in self._pumped(self.engine.speak(text, voice, speed)):
            yield item

    async def make_images(self, key: ImageBatchKey, request: ImageRequest) -> tuple[str, list[Picture]]:
        return self.replica, await self.engine.generate(key, request)

    async def _pumped(self, stream: AsyncIterator[Any]) -> AsyncIterator[tuple[str, list[Any]]]:
        """A stream's items, every item ready at once in one Ray item (an item costs about what
        an LLM's delta does to make: under load one carries a step of every sequence). Closing
        this (the ingress cancelled the call) closes the engine's stream, which stops its work."""
        queue: asyncio.Queue = asyncio.Queue()
        end = object()

        async def pump() -> None:
            try:
                async with aclosing(stream) as items:
                    async for item in items:
                        queue.put_nowait(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                queue.put_nowait(Failed(exc))
                return
            queue.put_nowait(end)

        task = asyncio.create_task(pump())
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                ready = [item for item in items if item is not end and not isinstance(item, Failed)]
                if ready:
                    yield self.replica, ready
                for item in items:
                    if isinstance(item, Failed):
                        raise _sendable(item.error)
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
