"""The pool: one engine per catalog version, loaded in the background at start-up, and
supervised while it serves.

A model that fails to load is kept, FAILED with its reason, so `/models` and `/health`
can say why, and every other model still serves. Every ``SUPERVISE_S`` the pool asks each
ready engine whether it can still serve (``Engine.check``: its loops, scheduler thread or
vLLM engine process alive); one that cannot is marked FAILED with the reason, stopped (its
waiting requests fail at once with 503) and started again after a backoff that doubles on
each failure in a row (``RESTART_BACKOFF_S`` up to ``MAX_BACKOFF_S``).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
from collections.abc import Callable

from inferd.backends import backend_class
from inferd.backends.base import (EncoderBackend, ImageGenerationBackend, RerankBackend, SpeechRecognitionBackend,
                                  SpeechSynthesisBackend)
from inferd.catalog import PUBLIC, Catalog, ModelRef, Task, Viewer
from inferd.engine.base import Engine, EngineObserver, EngineState
from inferd.engine.encoder import EncoderEngine
from inferd.engine.images import ImageEngine
from inferd.engine.speech import SpeechEngine
from inferd.engine.synthesis import SynthesisEngine
from inferd.settings import Settings

log = logging.getLogger(__name__)

SUPERVISE_S = 0.25
RESTART_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


class Unloadable(Engine):
    """Stands in for a model whose source or backend could not even be set up (FAILED), or for a
    deployment that is stopped (STOPPED): a request gets 503 with the reason."""

    def __init__(self, ref: ModelRef, error: str, state: EngineState = EngineState.FAILED):
        super().__init__(ref)
        self.state = state
        self.error = error

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


# the tasks the encoder engine serves, and the backend class each needs
_ENCODER_BACKENDS = {Task.EMBEDDINGS: EncoderBackend, Task.RERANKER: RerankBackend,
                     Task.IMAGE_CLASSIFICATION: EncoderBackend, Task.ZERO_SHOT_IMAGE_CLASSIFICATION: EncoderBackend,
                     Task.OBJECT_DETECTION: EncoderBackend, Task.TEXT_CLASSIFICATION: EncoderBackend,
                     Task.TOKEN_CLASSIFICATION: EncoderBackend, Task.FILL_MASK: EncoderBackend,
                     Task.QUESTION_ANSWERING: EncoderBackend, Task.TEXT2TEXT_GENERATION: EncoderBackend}
# the schedulers a text-generation backend names (its ``engine`` attribute), loaded when used
_GENERATION_ENGINES = {
    "continuous": "inferd.engine.lm_scheduler:BatchGenerationEngine",
    "vllm": "inferd.engine.vllm:VLLMEngine",
}


def _threads(task: Task, settings: Settings) -> int | None:
    if task in _ENCODER_BACKENDS or task is Task.TEXT_TO_SPEECH:  # several workers share the cores
        return settings.threads_per_worker()
    if task in (Task.AUTOMATIC_SPEECH_RECOGNITION, Task.TEXT_TO_IMAGE):  # one batch at a time, on every core
        return settings.torch_threads or os.cpu_count()
    return settings.torch_threads


def build_engine(ref: ModelRef, settings: Settings, observer: EngineObserver) -> Engine:
    """The engine for one catalog version; never raises (failures become FAILED engines)."""
    try:
        backend = backend_class(ref.spec.backend)(
            ref.spec,
            ref.version.source,
            dict(ref.spec.options),
            threads=_threads(ref.spec.task, settings),
            cache_dir=settings.resolved_cache_dir(),
        )
    except Exception as exc:  # noqa: BLE001 - reported through the engine's state
        return Unloadable(ref, f"{type(exc).__name__}: {exc}")
    if isinstance(backend, _ENCODER_BACKENDS.get(ref.spec.task, ())):
        workers = backend.workers or settings.engine_workers
        if workers == 1 and settings.engine_workers > 1:  # one pass at a time: it gets every core
            backend.threads = settings.torch_threads or os.cpu_count()
        return EncoderEngine(
            ref,
            backend,
            too_long=settings.too_long,
            batch_wait_s=settings.batch_wait_ms / 1000,
            observer=observer,
            workers=workers,
        )
    if ref.spec.task is Task.AUTOMATIC_SPEECH_RECOGNITION and isinstance(backend, SpeechRecognitionBackend):
        return SpeechEngine(ref, backend, observer)
    if ref.spec.task is Task.TEXT_TO_SPEECH and isinstance(backend, SpeechSynthesisBackend):
        return SynthesisEngine(ref, backend, observer, workers=settings.engine_workers)
    if ref.spec.task is Task.TEXT_TO_IMAGE and isinstance(backend, ImageGenerationBackend):
        return ImageEngine(ref, backend, observer)
    engine = _GENERATION_ENGINES.get(getattr(backend, "engine", ""))
    if ref.spec.task is Task.TEXT_GENERATION and engine is not None:
        module, _, name = engine.partition(":")
        return getattr(importlib.import_module(module), name)(ref, backend, observer)
    return Unloadable(ref, f"backend {ref.spec.backend!r} cannot serve task {ref.spec.task.value!r}")


def freeze_heap() -> None:
    """Move what loading left on the heap (models, tokenizers, libraries: millions of objects)
    out of the garbage collector's sight: a full collection otherwise walks all of it and stalls
    the event loop for hundreds of milliseconds under load."""
    gc.collect()
    gc.freeze()


EngineFactory = Callable[[ModelRef, Settings, EngineObserver], Engine]


class ModelPool:
    """The model host: ``build`` makes each catalog version's engine (``build_engine``: here, in
    this process; ``cluster.remote.remote_engines``: in Ray Serve replicas)."""

    def __init__(self, catalog: Catalog, settings: Settings, observer: EngineObserver,
                 build: EngineFactory | None = None):
        self.catalog = catalog
        self._settings = settings
        self._observer = observer
        self._build = build or build_engine
        self._engines: dict[str, Engine] = {ref.key: self._build(ref, settings, observer) for ref in catalog.refs()}
        self._loading: asyncio.Task | None = None
        self._supervisor: asyncio.Task | None = None
        self._restarts: dict[str, asyncio.Task] = {}
        self._failures: dict[str, int] = {}
        self._load_lock = asyncio.Lock()  # one model loads at a time: they share the cores

    def start(self) -> asyncio.Task:
        """Load every model in the background (one at a time: they share the cores)."""
        for engine in self._engines.values():
            if engine.state is EngineState.FAILED:
                log.error("model %s cannot be served: %s", engine.ref.key, engine.error)
        self._loading = asyncio.create_task(self._load_all(), name="load-models")
        self._supervisor = asyncio.create_task(self._supervise(), name="supervise-models")
        return self._loading

    async def _load_all(self) -> None:
        async with self._load_lock:
            for engine in list(self._engines.values()):
                if engine.state is EngineState.LOADING:
                    await engine.start()
            freeze_heap()

    # --- models added and removed while serving (deployments)

    def add(self, ref: ModelRef) -> Engine:
        """Make ``ref``'s engine (a catalog version that has none yet, or a stand-in) and return
        it, LOADING; ``load`` starts it."""
        existing = self._engines.get(ref.key)
        if existing is not None and not isinstance(existing, Unloadable):
            raise KeyError(f"{ref.key} already has an engine")
        engine = self._engines[ref.key] = self._build(ref, self._settings, self._observer)
        return engine

    async def load(self, engine: Engine) -> None:
        """Start an added engine, after whatever loads now; READY or FAILED (with its reason) after."""
        async with self._load_lock:
            if engine.state is EngineState.LOADING and self._engines.get(engine.ref.key) is engine:
                await engine.start()
                if engine.state is EngineState.READY:
                    freeze_heap()

    def put(self, ref: ModelRef, engine: Engine) -> None:
        """Serve ``ref`` with an engine made elsewhere (a LoRA adapter's, on its base's engine)."""
        self._engines[ref.key] = engine

    def hold(self, ref: ModelRef, reason: str, state: EngineState = EngineState.STOPPED) -> Engine:
        """Put a stand-in where ``ref``'s engine goes (a stopped or failed deployment: 503 with ``reason``)."""
        engine = self._engines[ref.key] = Unloadable(ref, reason, state)
        return engine

    async def remove(self, key: str, stand_in: Engine | None = None) -> None:
        """Stop a version's engine (its waiting requests fail with 503) and forget it, or put
        ``stand_in`` in its place (at once: a request never finds the key without an engine); its
        memory is given back (the collector unfrozen for the one collection that frees it)."""
        engine = self._engines.pop(key, None) if stand_in is None else self._engines.get(key)
        if stand_in is not None:
            self._engines[key] = stand_in
        self._failures.pop(key, None)
        restart = self._restarts.pop(key, None)
        if restart is not None:
            restart.cancel()
            await asyncio.gather(restart, return_exceptions=True)
        if engine is None or engine is stand_in:
            return
        await engine.stop()
        del engine
        gc.unfreeze()
        freeze_heap()


    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_S)
            for key, engine in list(self._engines.items()):
                if engine.state is not EngineState.READY or key in self._restarts:
                    continue
                reason = engine.check()
                if reason is not None:
                    self._restarts[key] = asyncio.create_task(self._restart(key, engine, reason),
                                                              name=f"restart:{key}")
                else:
                    self._failures.pop(key, None)

    async def _restart(self, key: str, engine: Engine, reason: str) -> None:
        """Stop a model that died and start it again, with backoff, until it serves."""
        try:
            engine.state, engine.error = EngineState.FAILED, reason
            await engine.stop()  # its waiting requests fail now, with 503
            while True:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(MAX_BACKOFF_S, RESTART_BACKOFF_S * 2 ** (failures - 1))
                log.error("model %s failed: %s; restarting it in %.0f s", key, reason, delay)
                engine.state, engine.error = EngineState.FAILED, f"{reason}; restarting in {delay:.0f} s"
                await asyncio.sleep(delay)
                engine.state, engine.error = EngineState.LOADING, None
                await engine.start()
                if engine.state is EngineState.READY:
                    log.info("model %s is back after a restart", key)
                    freeze_heap()
                    return
                reason = engine.error or "it failed to start"
        finally:
            self._restarts.pop(key, None)

    async def stop(self) -> None:
        tasks = [t for t in (self._loading, self._supervisor, *self._restarts.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(engine.stop() for engine in self._engines.values()), return_exceptions=True)

    def engine(self, ref: ModelRef) -> Engine:
        return self._engines[ref.key]

    def find(self, key: str) -> Engine | None:
        return self._engines.get(key)

    def get(self, name: str, version: str | None = None, task: Task | None = None,
            viewer: Viewer = PUBLIC) -> Engine:
        """The engine for a model name (id, alias, ``MODEL:VERSION``, ``deploy_id:ID``) that
        ``viewer`` may see; raises ModelNotFound."""
        return self._engines[self.catalog.resolve(name, version, task, viewer).key]

    def engines(self) -> list[Engine]:
        return list(self._engines.values())
