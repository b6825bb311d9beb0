"""The engine interface the serving layer talks to, whatever the model or runtime.

An engine owns one loaded model (one catalog version). It loads in the background,
says how it is doing through ``state``/``error``/``stats()``, and is stopped once.
Task-specific calls (``embed`` here, ``generate``/``abort`` for LLMs) sit on the
subclasses; the serving layer gets an engine from the pool and never knows the runtime.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from enum import StrEnum
from typing import Any, Protocol

from inferd.catalog import ModelRef
from inferd.errors import ModelNotReady, ModelUnavailable


class EngineState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


class EngineObserver(Protocol):
    """Where an engine reports what it does (metrics); see observability/metrics.py."""

    def batch_done(self, model: str, size: int, tokens: int, seconds: float) -> None: ...

    def queue_depth(self, model: str, depth: int) -> None: ...

    def running(self, model: str, sequences: int) -> None: ...

    def replica_answered(self, model: str, replica: str) -> None: ...


class NullObserver:
    def batch_done(self, model: str, size: int, tokens: int, seconds: float) -> None:
        pass

    def queue_depth(self, model: str, depth: int) -> None:
        pass

    def running(self, model: str, sequences: int) -> None:
        pass

    def replica_answered(self, model: str, replica: str) -> None:
        pass


class Engine(ABC):
    def __init__(self, ref: ModelRef):
        self.ref = ref
        self.state = EngineState.LOADING
        self.error: str | None = None

    @property
    def name(self) -> str:
        return self.ref.spec.id

    @abstractmethod
    async def start(self) -> None:
        """Load the model; sets state READY or FAILED (with ``error``), never raises. (An engine
        in Ray Serve replicas with none placed yet stays LOADING and finishes on its own.)"""

    @abstractmethod
    async def stop(self) -> None:
        """Fail queued work, stop workers and free the model."""

    def ensure_ready(self) -> None:
        """Raise the error a caller should see when this engine cannot take work now."""
        if self.state is EngineState.READY:
            return
        if self.state is EngineState.LOADING:
            raise ModelNotReady(f"model {self.name} is loading; retry shortly", retry_after=5)
        raise ModelUnavailable(f"model {self.name} is unavailable: {self.error or self.state.value}")

    async def ready(self) -> None:
        """``ensure_ready`` for a request about to use this engine; an engine in another process
        (a Ray Serve replica) may first wait, bounded, for what it needs to know of its model."""
        self.ensure_ready()

    def check(self) -> str | None:
        """Why this READY engine can no longer serve (a dead loop, thread or engine process), or
        None. The pool asks every ``SUPERVISE_S``; a reason fails the engine and restarts it."""
        return None

    def stats(self) -> dict[str, Any]:
        return {"state": self.state.value, "error": self.error}


def settle(future: asyncio.Future, result: Any) -> None:
    """Hand a worker thread's result (or exception) to its waiting request, on the loop's thread
    (``loop.call_soon_threadsafe(settle, future, result)``); a request that left is skipped."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
