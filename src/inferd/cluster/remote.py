"""Models in Ray Serve replicas, seen from the ingress: engines with the interface the serving
layer already uses, whose calls go through the model's deployment handle.

``Remote.call`` turns Ray's failures into inferd's errors: an ``InferdError`` raised in the
replica (a bad input, a full queue) is raised here whole (status, ``param``, ``Retry-After``);
a replica that dies or goes away under a request is tried once more on another replica (the
calls are idempotent: an encoder pass), then 503 with ``Retry-After``; no answer within
``ray_request_timeout_s`` (no replica comes up: scale from zero that cannot be placed) is 503
too, never a hang. A request whose client leaves cancels its call in the replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferd.backends.base import relevance
from inferd.catalog import ModelRef, Task
from inferd.engine.base import Engine, EngineObserver, EngineState
from inferd.engine.encoder import EncodeResult, EncoderModel
from inferd.errors import EngineError, InferdError, ModelUnavailable, Overloaded
from inferd.settings import Settings

log = logging.getLogger(__name__)

# the tasks whose engines run in replicas so far (the others are served by one process only)
RAY_TASKS = frozenset({Task.EMBEDDINGS, Task.RERANKER})


class Remote:
    """The calls to one model's deployment."""

    def __init__(self, handle: Any, model: str, timeout_s: float, observer: EngineObserver):
        self.handle = handle
        self.model = model
        self.timeout_s = timeout_s
        self.observer = observer

    async def call(self, method: str, *args: Any) -> Any:
        from ray.exceptions import RayActorError, RayTaskError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

        for attempt in (1, 2):
            response = getattr(self.handle, method).remote(*args)
            try:
                async with asyncio.timeout(self.timeout_s):
                    replica, value = await response
                self.observer.replica_answered(self.model, replica)
                return value
            except asyncio.CancelledError:
                response.cancel()  # the client left: the replica stops its part
                raise
            except TimeoutError:
                response.cancel()
                raise ModelUnavailable(f"model {self.model}: no replica answered within {self.timeout_s:.0f} s",
                                       retry_after=5) from None
            except RayTaskError as exc:
                if isinstance(exc.cause, InferdError):
                    raise exc.cause from None
                raise EngineError(f"model {self.model} failed: {exc.cause!r}") from None
            except BackPressureError:
                raise Overloaded(f"model {self.model} is overloaded; retry later", retry_after=1) from None
            except DeploymentUnavailableError:
                raise ModelUnavailable(f"model {self.model} failed to deploy on Ray Serve", retry_after=30) from None
            except (RayActorError, ReplicaUnavailableError) as exc:
                if attempt == 2:
                    raise ModelUnavailable(f"model {self.model}: its replica went away ({type(exc).__name__}); "
                                           "retry shortly", retry_after=2) from None
                log.warning("model %s: a replica went away under a request (%s); trying another",
                            self.model, type(exc).__name__)
        raise AssertionError("unreachable")


class Coalescer:
    """The calls made in one turn of the event loop go to a replica as one call (``method`` takes
    a list of arguments and answers a list of results, an ``InferdError`` where one failed): a
    hop costs the ingress and the replica about a millisecond of CPU each, whatever it carries,
    and the replica's engine batches the requests anyway. Nothing waits for more: a request
    alone goes at once. A request whose client leaves gets no answer; its part of the call still
    runs (an encoder pass costs milliseconds)."""

    def __init__(self, remote: Remote, method: str):
        self.remote = remote
        self.method = method
        self._pending: list[tuple[Any, asyncio.Future]] = []

    async def submit(self, argument: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((argument, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = [(a, f) for a, f in self._pending if not f.done()], []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            _in_flight.add(task)
            task.add_done_callback(_in_flight.discard)

    async def _send(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        try:
            results = await self.remote.call(self.method, [argument for argument, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every request of the call gets the call's error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


_in_flight: set[asyncio.Task] = set()  # calls being sent (a task needs a reference until it ends)


@dataclass(frozen=True, slots=True)
class EncoderFacts:
    """An encoder backend's facts, as its replica describes them."""

    modalities: frozenset[str]
    normalizes: bool
    vocab_size: int
    dimensions: int
    scoring: str | None = None

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        return relevance(self.scoring or "pairs", raw)


class RemoteEngine(Engine):
    """An engine in a deployment's replicas. Ready once a replica has described the model; a
    model kept at 0 replicas while idle is ready at once and described by its first request
    (which waits, bounded, for a replica to come up)."""

    def __init__(self, ref: ModelRef, remote: Remote):
        super().__init__(ref)
        self.remote = remote
        self.facts: dict[str, Any] | None = None
        self._describing: asyncio.Lock | None = None

    async def start(self) -> None:
        if self.ref.spec.scaling.min_instances == 0:
            self.state = EngineState.READY
            return
        try:
            await self._describe()
        except InferdError as exc:
            self.state, self.error = EngineState.FAILED, exc.message
            log.error("model %s is not served on Ray Serve: %s", self.ref.key, exc.message)
            return
        self.state = EngineState.READY

    async def stop(self) -> None:
        self.state = EngineState.STOPPED  # the replicas go with the Serve application

    async def ready(self) -> None:
        self.ensure_ready()
        if self.facts is None:
            await self._describe()

    async def _describe(self) -> None:
        if self._describing is None:
            self._describing = asyncio.Lock()
        async with self._describing:
            if self.facts is None:
                self._learn(await self.remote.call("describe"))

    def _learn(self, facts: dict[str, Any]) -> None:
        self.facts = facts

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "runs_on": "ray-serve", "deployment": self.remote.handle.deployment_name}


class RemoteEncoder(RemoteEngine, EncoderModel):
    backend: EncoderFacts | None = None

    def __init__(self, ref: ModelRef, remote: Remote):
        super().__init__(ref, remote)
        self._embeds = Coalescer(remote, "embed_many")

    def _learn(self, facts: dict[str, Any]) -> None:
        self.backend = EncoderFacts(**facts)
        super()._learn(facts)

    async def embed(self, inputs: Sequence[Any]) -> EncodeResult:
        return await self._embeds.submit(list(inputs))

    async def cut(self, texts: Sequence[str], limit: int) -> list[str]:
        return await self.remote.call("cut", list(texts), limit)


def remote_engines(models: dict[str, tuple[str, str]],
                   settings: Settings) -> Callable[[ModelRef, Settings, EngineObserver], Engine]:
    """The pool's engine factory on the ingress: each catalog version's engine is in the
    replicas of its deployment (``models``: version key -> (deployment, application))."""
    from ray import serve

    from inferd.engine.pool import Unloadable

    def build(ref: ModelRef, _settings: Settings, observer: EngineObserver) -> Engine:
        names = models.get(ref.key)
        handle = serve.get_deployment_handle(*names) if names else None
        if handle is None:
            return Unloadable(ref, f"task {ref.spec.task.value} is not served on Ray Serve yet; serve it from one "
                                   "process (inferd serve without --ray)")
        remote = Remote(handle, ref.spec.id, settings.ray_request_timeout_s, observer)
        return RemoteEncoder(ref, remote)

    return build
