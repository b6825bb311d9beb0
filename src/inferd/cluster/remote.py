"""Models in Ray Serve replicas, seen from the ingress: engines with the interface the serving
layer already uses, whose calls go through the model's deployment handle.

``Remote.call`` turns Ray's failures into inferd's errors: an ``InferdError`` raised in the
replica (a bad input, a full queue) is raised here whole (status, ``param``, ``Retry-After``);
a replica that dies or goes away under a request is tried once more on another replica (the
calls are idempotent: an encoder pass), then 503 with ``Retry-After``; no answer within
``ray_request_timeout_s`` (no replica comes up: scale from zero that cannot be placed) is 503
too, never a hang. A request whose client leaves cancels its call in the replica.

Calls go over each replica's gRPC server with the handle's router in this event loop (Ray
Serve's throughput-optimised handles; ``ray_direct_calls``), or as Ray tasks through the object
store when that is off. Every task has a remote form here; the answers that need the model's
own labels or tokenizer (the text and vision tasks) are made in the replica.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from inferd.backends.base import ImageBatchKey, ImageRequest, Voice, count_prompt_tokens, relevance
from inferd.catalog import ModelRef, Task
from inferd.cluster.feeds import END, END_WAIT_S, FED, Failed, Feeds, Waiting
from inferd.engine.base import Engine, EngineObserver, EngineState
from inferd.engine.encoder import EncodeResult, EncoderModel
from inferd.engine.generation import Adapter, GenerationEngine, GenerationRequest, SequenceDelta
from inferd.engine.images import ImageModel, Picture
from inferd.engine.pool import EngineFactory, build_engine
from inferd.engine.speech import SpeechModel, SpeechRequest, Transcribed
from inferd.engine.synthesis import SynthesisModel
from inferd.errors import EngineError, InferdError, ModelNotReady, ModelUnavailable, NoReplica, Overloaded
from inferd.settings import Settings

log = logging.getLogger(__name__)

# A catalog model's first replica at start: the pool (which starts models one at a time) waits
# this long for it, then goes on to the next model while this one keeps waiting (503 meanwhile).
FIRST_WAIT_S = 30.0
WAITING_RETRY_S = 30  # Retry-After while a model waits for its first replica

# the tasks whose engines run in replicas: every task inferd serves
RAY_TASKS = frozenset({
    Task.EMBEDDINGS, Task.RERANKER, Task.TEXT_GENERATION,
    Task.TEXT_CLASSIFICATION, Task.TOKEN_CLASSIFICATION, Task.FILL_MASK, Task.QUESTION_ANSWERING,
    Task.TEXT2TEXT_GENERATION,
    Task.IMAGE_CLASSIFICATION, Task.ZERO_SHOT_IMAGE_CLASSIFICATION, Task.OBJECT_DETECTION,
    Task.AUTOMATIC_SPEECH_RECOGNITION, Task.TEXT_TO_SPEECH, Task.TEXT_TO_IMAGE,
})


class Remote:
    """The calls to one model's deployment (``names``: the deployment's and its application's)."""

    def __init__(self, names: tuple[str, str], model: str, timeout_s: float, observer: EngineObserver,
                 direct: bool = False):
        self.names = names
        self.model = model
        self.timeout_s = timeout_s
        self.observer = observer
        self._direct = direct
        self._handles: tuple[Any, Any] | None = None  # (calls, streaming calls), made on the first call

    def _method(self, name: str, stream: bool = False) -> Any:
        if self._handles is None:
            from ray import serve

            calls = serve.get_deployment_handle(*self.names)  # (a deployment added while serving: now up)
            if self._direct:
                # Ray Serve's throughput-optimised handle: its router in this event loop (no hop to
                # Ray's router thread for each call and each streamed item) and calls over the
                # replica's gRPC server rather than Ray tasks and the object store. Made on the
                # first call: such a router belongs to the running loop. (Serve caches handles: one
                # made for this deployment before is already set up)
                if not calls.is_initialized:
                    calls._init(_run_router_in_separate_loop=False)
                calls = calls.options(_by_reference=False)
            self._handles = (calls, calls.options(stream=True))
        return getattr(self._handles[stream], name)

    def _error(self, exc: BaseException, retried: bool) -> InferdError | None:
        """Ray's failure as the error the client gets; None: a replica went away, try another
        (unless ``retried``)."""
        from grpc.aio import AioRpcError  # Ray Serve's own dependency
        from ray.exceptions import RayActorError, RayTaskError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

        if isinstance(exc, InferdError):  # (a streaming call raises the replica's own error as it is)
            return exc
        if isinstance(exc, RayTaskError):
            if isinstance(exc.cause, InferdError):
                return exc.cause  # raised in the replica: the same status, param and Retry-After
            return EngineError(f"model {self.model} failed: {exc.cause!r}")
        if isinstance(exc, BackPressureError):
            return Overloaded(f"model {self.model} is overloaded; retry later", retry_after=1)
        if isinstance(exc, DeploymentUnavailableError):
            return ModelUnavailable(f"model {self.model} failed to deploy on Ray Serve", retry_after=30)
        # (a direct call's gRPC channel that broke mid-call: Serve maps only UNAVAILABLE to RayActorError)
        if isinstance(exc, RayActorError | ReplicaUnavailableError | AioRpcError):
            if retried:
                return ModelUnavailable(f"model {self.model}: its replica went away ({type(exc).__name__}); "
                                        "retry shortly", retry_after=2)
            log.warning("model %s: a replica went away under a call (%s); trying another", self.model,
                        type(exc).__name__)
            return None
        return EngineError(f"model {self.model}: Ray failed: {exc!r}")

    def response(self, method: str, *args: Any, stream: bool = False) -> Any:
        """A call's own response (Ray's: awaited or iterated; ``cancel()``), nothing mapped."""
        return self._method(method, stream).remote(*args)

    async def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        timeout_s = timeout_s or self.timeout_s
        for attempt in (1, 2):
            response = self.response(method, *args)
            try:
                async with asyncio.timeout(timeout_s):
                    replica, value = await response
                self.observer.replica_answered(self.model, replica)
                return value
            except asyncio.CancelledError:
                response.cancel()  # the client left: the replica stops its part
                raise
            except TimeoutError:
                response.cancel()
                raise NoReplica(f"model {self.model}: no replica answered within {timeout_s:.0f} s",
                                retry_after=5) from None
            except Exception as exc:  # noqa: BLE001 - Ray's failures, mapped
                error = self._error(exc, retried=attempt == 2)
                if error is not None:
                    raise error from None
        raise AssertionError("unreachable")

    async def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        """A streaming call's items. Before its first item a replica that went away is tried once
        more on another; after it, 503 (what was sent cannot be taken back). Leaving early
        cancels the call in the replica."""
        for attempt in (1, 2):
            response = self.response(method, *args, stream=True)
            started = finished = False
            try:
                async for replica, item in response:
                    if not started:
                        started = True
                        self.observer.replica_answered(self.model, replica)
                    yield item
                finished = True
                return
            except Exception as exc:  # noqa: BLE001 - Ray's failures, mapped
                finished = True
                error = self._error(exc, retried=started or attempt == 2)
                if error is not None:
                    raise error from None
            finally:
                if not finished:
                    response.cancel()  # the client left: the replica stops


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


class Deployer(Protocol):
    """Serve applications for models added while serving (``cluster.serve.ServeDeployer``)."""

    def names(self, ref: ModelRef) -> tuple[str, str]: ...

    def deploy(self, ref: ModelRef, settings: Settings) -> None:
        """The model's application deployed and its replicas up (blocks; raises why not)."""

    def undeploy(self, ref: ModelRef) -> None: ...


class RemoteEngine(Engine):
    """An engine in a deployment's replicas, ready once a replica has described the model. A
    model added while serving (a user's deployment) brings its Serve application up when it
    starts, and takes it down when it stops (``deployer``)."""

    def __init__(self, ref: ModelRef, remote: Remote, deployer: Deployer | None = None,
                 settings: Settings | None = None):
        super().__init__(ref)
        self.remote = remote
        self._deployer, self._settings = deployer, settings
        self._deployed = False
        self._waiting: asyncio.Task | None = None  # describing until a replica is up (none placed at start)

    async def start(self) -> None:
        if self._deployer is not None and not self._deployed:
            try:
                await asyncio.to_thread(self._deployer.deploy, self.ref, self._settings)
            except Exception as exc:  # noqa: BLE001 - Ray's reasons (no room, a constructor that failed)
                self.state, self.error = EngineState.FAILED, f"it failed to deploy on Ray Serve: {exc}"[:2000]
                log.error("model %s: %s", self.ref.key, self.error)
                await self._take_down()
                return
            self._deployed = True
        # a model kept at 0 replicas while idle has one started for this (it goes when idle)
        try:
            await self._describe(timeout_s=min(FIRST_WAIT_S, self.remote.timeout_s) if self._deployer is None else None)
        except InferdError as exc:
            if isinstance(exc, NoReplica) and self._deployer is None:
                # a catalog model with no replica yet (none can be placed: no room, no GPU node
                # yet): the others load meanwhile, and it serves once the cluster has room for one.
                # (A user's deployment fails instead: its bring-up reports why.)
                log.warning("model %s: %s; it serves once a replica is up (until then 503 with Retry-After)",
                            self.ref.key, exc.message)
                self.error = f"waiting for a replica: {exc.message}"  # (/health says why it is still loading)
                self._waiting = asyncio.create_task(self._describe_when_up(), name=f"describe:{self.ref.key}")
            else:
                self._failed(exc)
            return
        self.state = EngineState.READY

    async def _describe_when_up(self) -> None:
        while True:
            try:
                await self._describe()
            except NoReplica:
                await asyncio.sleep(1)  # (the call itself waited; Serve keeps the replica it asked for pending)
                continue
            except InferdError as exc:
                self._failed(exc)
                return
            log.info("model %s: a replica is up on Ray Serve; it serves now", self.ref.key)
            self.state, self.error = EngineState.READY, None
            return

    def _failed(self, exc: InferdError) -> None:
        self.state, self.error = EngineState.FAILED, exc.message
        log.error("model %s is not served on Ray Serve: %s", self.ref.key, exc.message)

    def ensure_ready(self) -> None:
        if self.state is EngineState.LOADING and self._waiting is not None:
            raise ModelNotReady(f"model {self.name} is waiting for a replica on Ray Serve (none could be placed "
                                "yet); retry later", retry_after=WAITING_RETRY_S)
        super().ensure_ready()

    async def stop(self) -> None:
        self.state = EngineState.STOPPED  # the replicas go with the Serve application
        if self._waiting is not None:
            self._waiting.cancel()
            await asyncio.gather(self._waiting, return_exceptions=True)
            self._waiting = None
        await self._take_down()

    async def _take_down(self) -> None:
        if self._deployer is not None:
            self._deployed = False
            try:
                await asyncio.to_thread(self._deployer.undeploy, self.ref)
            except Exception as exc:  # noqa: BLE001 - going anyway
                log.warning("model %s: its Serve application did not go cleanly: %s", self.ref.key, exc)

    async def _describe(self, timeout_s: float | None = None) -> None:
        self._learn(await self.remote.call("describe", timeout_s=timeout_s))

    @abstractmethod
    def _learn(self, facts: dict[str, Any]) -> None:
        """Take what the replica said of the model (``ModelReplica.describe``)."""

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "runs_on": "ray-serve", "deployment": self.remote.names[0]}


class RemoteEncoder(RemoteEngine, EncoderModel):
    backend: EncoderFacts | None = None

    def __init__(self, ref: ModelRef, remote: Remote, *args: Any):
        super().__init__(ref, remote, *args)
        self._embeds = Coalescer(remote, "embed_many")
        self._answers = Coalescer(remote, "answer_many")

    def _learn(self, facts: dict[str, Any]) -> None:
        self.backend = EncoderFacts(**facts)

    async def embed(self, inputs: Sequence[Any]) -> EncodeResult:
        return await self._embeds.submit(list(inputs))

    async def answer(self, inputs, finish, check=None):
        # the replica checks, embeds and finishes: the answer (labels, entities) comes back
        return await self._answers.submit((list(inputs), finish, check))

    async def cut(self, texts: Sequence[str], limit: int) -> list[str]:
        return await self.remote.call("cut", list(texts), limit)


class RemoteGeneration(RemoteEngine, GenerationEngine):
    """An LLM in a deployment's replicas. The tokenizer comes from the replica's description:
    prompts are rendered, tokenised and checked here; the replica generates. A request's deltas
    come on its call, or by this ingress's feed from the replica (``cluster.feeds``: one stream
    for all its requests there, ``ray_feeds``)."""

    def __init__(self, ref: ModelRef, remote: Remote, deployer: Deployer | None = None,
                 settings: Settings | None = None):
        super().__init__(ref, remote, deployer, settings)
        self._feeds = Feeds(remote, ref.spec.id) if settings is None or settings.ray_feeds else None
        self._live: dict[str, tuple[asyncio.Task, asyncio.Queue]] = {}

    def _learn(self, facts: dict[str, Any]) -> None:
        self.tokenizer = facts["tokenizer"]
        self.context_length = facts["context_length"]
        self.eos_token_ids = facts["eos_token_ids"]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[SequenceDelta]:
        rid = request.request_id
        waiting = self._feeds.expect(rid) if self._feeds is not None else Waiting()
        call = asyncio.get_running_loop().create_task(self._call(request, waiting))
        _in_flight.add(call)
        call.add_done_callback(_in_flight.discard)
        self._live[rid] = (call, waiting.queue)
        try:
            while True:
                item = await waiting.queue.get()
                if item is END:
                    return
                if isinstance(item, Failed):
                    raise item.error
                for delta in item:
                    yield delta
        finally:
            # the client left (the call is cancelled: the replica stops the request), or it ended
            # (a fed request's call ends as its end comes by the feed: nothing left to cancel)
            call.cancel()
            self._live.pop(rid, None)
            if self._feeds is not None:
                self._feeds.forget(rid)

    async def _call(self, request: GenerationRequest, waiting: Waiting) -> None:
        """The request's call: its deltas into ``waiting`` as they come on it, until it says
        ``FED`` (the rest, and the end, come by the feed); then its end or its error."""
        inbox = self._feeds.inbox if self._feeds is not None else None
        fed = opened = False
        try:
            async with aclosing(self.remote.stream("generate", request, inbox)) as stream:
                async for item in stream:
                    if item == FED:
                        fed = True
                        waiting.switch()
                        continue
                    if not opened and inbox is not None:
                        opened = True
                        self._feeds.open()  # answered on the call: that replica has no feed from here
                    waiting.queue.put_nowait(item)
            if not fed:
                waiting.queue.put_nowait(END)
                return
            # the replica put the request's end in the feed before its call ended: it comes at once,
            # unless the feed broke on the way
            await asyncio.sleep(END_WAIT_S)
            raise ModelUnavailable(f"model {self.ref.spec.id}: the end of the stream never came from its replica",
                                   retry_after=2)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the request's error (mapped by Remote), to its consumer
            waiting.queue.put_nowait(Failed(exc))

    async def abort(self, request_id: str) -> None:
        live = self._live.pop(request_id, None)
        if live is not None:
            call, queue = live
            call.cancel()  # the replica stops the request
            queue.put_nowait(END)

    async def stop(self) -> None:
        if self._feeds is not None:
            self._feeds.close()
        await super().stop()

    async def add_adapter(self, adapter: Adapter) -> None:
        """Load a LoRA adapter in one replica (a bad one fails here, with vLLM's reason). Every
        request with it names it (``GenerationRequest.adapter``: its id and directory), so each
        replica — those Serve starts later too — loads it on its first such request, as vLLM
        reloads an adapter it evicted; its directory must be on the replicas' machines."""
        await self.remote.call("add_adapter", adapter)

    async def remove_adapter(self, adapter: Adapter) -> None:
        """Out of the replica that answers; the others drop it as vLLM evicts (``max_cpu_loras``):
        no request names it again."""
        await self.remote.call("remove_adapter", adapter)


@dataclass(frozen=True, slots=True)
class SpeechFacts:
    multilingual: bool
    languages: list[str]


class RemoteSpeech(RemoteEngine, SpeechModel):
    """A speech-recognition model in a deployment's replicas: the request's file travels whole
    (``serving.speech.AudioFile``) and is decoded there."""

    backend: SpeechFacts | None = None

    def _learn(self, facts: dict[str, Any]) -> None:
        self.backend = SpeechFacts(**facts)

    async def transcribe(self, request: SpeechRequest) -> AsyncIterator[Transcribed]:
        async with aclosing(self.remote.stream("transcribe", request)) as stream:
            async for pieces in stream:
                for piece, seconds in pieces:
                    request.seconds = seconds  # decoded so far, in the replica
                    yield piece


class RemoteSynthesis(RemoteEngine, SynthesisModel):
    """A text-to-speech model in a deployment's replicas: sentences' audio streams back."""

    _voices: tuple[Voice, ...] = ()  # until a replica describes the model
    _sample_rate: int = 0

    def _learn(self, facts: dict[str, Any]) -> None:
        self._voices, self._sample_rate = tuple(facts["voices"]), facts["sample_rate"]

    @property
    def voices(self) -> list[Voice]:
        return list(self._voices)

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    async def speak(self, text: str, voice: str, speed: float = 1.0) -> AsyncIterator[np.ndarray]:
        async with aclosing(self.remote.stream("speak", text, voice, speed)) as stream:
            async for sentences in stream:
                for samples in sentences:
                    yield samples


@dataclass(frozen=True, slots=True)
class ImageFacts:
    default_size: tuple[int, int]
    default_steps: int
    default_guidance: float
    size_multiple: int
    modes: frozenset[str]
    schedulers: tuple[str, ...]
    prompt_tokenizer: Any = None

    def prompt_tokens(self, text: str) -> int:
        return count_prompt_tokens(self.prompt_tokenizer, text)


class RemoteImages(RemoteEngine, ImageModel):
    """An image-generation model in a deployment's replicas (its engine batches requests there)."""

    backend: ImageFacts | None = None

    def _learn(self, facts: dict[str, Any]) -> None:
        self.backend = ImageFacts(**facts)

    async def generate(self, key: ImageBatchKey, request: ImageRequest) -> list[Picture]:
        return await self.remote.call("make_images", key, request)


_REMOTE_FORMS: dict[Task, type[RemoteEngine]] = {
    Task.TEXT_GENERATION: RemoteGeneration, Task.AUTOMATIC_SPEECH_RECOGNITION: RemoteSpeech,
    Task.TEXT_TO_SPEECH: RemoteSynthesis, Task.TEXT_TO_IMAGE: RemoteImages,
}  # every other task: an encoder (RemoteEncoder)


def remote_engines(models: dict[str, tuple[str, str]], deployer: Deployer | None = None) -> EngineFactory:
    """The pool's engine factory on the ingress: each catalog version's engine is in the
    replicas of its deployment (``models``: version key -> (deployment, application)); a model
    added while serving gets an application of its own through ``deployer`` (None: this process
    serves such models itself)."""

    def build(ref: ModelRef, settings: Settings, observer: EngineObserver) -> Engine:
        names = models.get(ref.key)
        added = names is None
        if added and (deployer is None or ref.spec.task not in RAY_TASKS):
            log.info("model %s (%s) is served by the ingress process, not by Ray Serve replicas", ref.key,
                     ref.spec.task.value)
            return build_engine(ref, settings, observer)
        if added:
            names = deployer.names(ref)
        remote = Remote(names, ref.spec.id, settings.ray_request_timeout_s, observer, direct=settings.ray_direct_calls)
        return _REMOTE_FORMS.get(ref.spec.task, RemoteEncoder)(ref, remote, deployer if added else None, settings)

    return build
