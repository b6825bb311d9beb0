"""Text generation, whatever the dialect: prompts in, a metered stream of deltas out.

The dialect modules (``openai_chat``, ``openai_completions``, ``native_generation``) turn
their request into prompt token ids and ``SamplingParams``, call ``GenerationService.run``,
and shape what comes back. A ``Run`` yields ``(prompt_index, SequenceDelta)`` pairs; it
charges the request when the last sequence finishes (so the last chunk can carry the
cost) and leaves a usage record however it ends: succeeded, failed, or cancelled when
the client went away (the engine aborts the request's sequences at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from inferd.catalog import ModelRef, Task, Units, Viewer
from inferd.engine.generation import GenerationEngine, GenerationRequest, SamplingParams, SequenceDelta, TokenLogprob
from inferd.engine.grammar import Constraint
from inferd.engine.pool import ModelPool
from inferd.errors import InvalidRequest
from inferd.protocol.openai import ResponseFormat
from inferd.serving.context import RequestContext
from inferd.serving.metering import Charge, Meter
from inferd.serving.prompt import PromptPipeline, sampling_params


@dataclass(slots=True)
class Choice:
    """One sequence gathered whole (non-streaming answers)."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    stop_sequence: str | None = None


class Run:
    def __init__(self, service: GenerationService, ref: ModelRef, engine: GenerationEngine,
                 prompts: list[list[int]], params: SamplingParams, ctx: RequestContext):
        self.ref = ref
        self.engine = engine
        self.prompts = prompts
        self.params = params
        self.ctx = ctx
        self.created = int(time.time())
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.completion_tokens = 0
        self._cached: dict[int, int] = {}  # prompt index -> its tokens the runtime's prefix cache had
        self.charge: Charge | None = None
        self._meter = service.meter
        self._iterating: AsyncIterator | None = None
        self.tools = None  # a ToolPlan when the request has tools (serving/tools.py)

    @property
    def usage(self) -> dict:
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.charge is not None:
            usage["estimated_cost"] = self.charge.cost_usd
        return usage

    @property
    def cached_tokens(self) -> int:
        return sum(self._cached.values())

    def _units(self) -> Units:
        return Units(input_tokens=self.prompt_tokens, cached_input_tokens=self.cached_tokens,
                     output_tokens=self.completion_tokens)

    def _streams(self) -> list[AsyncIterator[SequenceDelta]]:
        rid = self.ctx.request_id
        return [
            self.engine.generate(GenerationRequest(rid if len(self.prompts) == 1 else f"{rid}-{i}", p, self.params))
            for i, p in enumerate(self.prompts)
        ]

    def __aiter__(self) -> AsyncIterator[tuple[int, SequenceDelta]]:
        self._iterating = self._iterate()
        return self._iterating

    async def aclose(self) -> None:
        """End the run now (the consumer stopped early): aborts it and records it as cancelled."""
        if self._iterating is not None:
            await self._iterating.aclose()

    async def _iterate(self) -> AsyncIterator[tuple[int, SequenceDelta]]:
        if self.params.constraint is not None:  # compiles off the loop, cached; a bad schema is a 400
            await self.engine.prepare(self.params.constraint)
        async with self._meter.track(self.ctx, self.ref) as metered:
            streams = self._streams()
            # from here the engine has the prompts: a request cancelled or failed now is charged
            # for them and for the tokens it had generated
            metered.consume(Units(input_tokens=self.prompt_tokens))
            source = _tagged(streams[0], 0) if len(streams) == 1 else _merged(streams)
            async with aclosing(source) as pairs:
                async for index, delta in pairs:
                    self.completion_tokens += len(delta.token_ids)
                    if delta.cached_prompt_tokens:  # n > 1 shares one prompt: counted once
                        self._cached[index] = max(self._cached.get(index, 0), delta.cached_prompt_tokens)
                    metered.consume(self._units())
                    yield index, delta
            self.charge = metered.charge(self._units())

    async def gather(self) -> list[Choice]:
        """Every choice whole, in order (prompt-major, then ``n``)."""
        n = self.params.n
        choices = [Choice() for _ in range(len(self.prompts) * n)]
        async for p, delta in self:
            choice = choices[p * n + delta.index]
            choice.text += delta.text
            choice.token_ids += delta.token_ids
            if delta.logprobs is not None:
                choice.logprobs = (choice.logprobs or []) + delta.logprobs
            if delta.prompt_logprobs is not None:
                choice.prompt_logprobs = delta.prompt_logprobs
            if delta.finish_reason:
                choice.finish_reason = delta.finish_reason
                choice.stop_sequence = delta.stop_sequence
        return choices


async def _tagged(stream: AsyncIterator[SequenceDelta], index: int) -> AsyncIterator[tuple[int, SequenceDelta]]:
    async with aclosing(stream):
        async for delta in stream:
            yield index, delta


async def _merged(streams: list[AsyncIterator[SequenceDelta]]) -> AsyncIterator[tuple[int, SequenceDelta]]:
    """Several prompts' streams as one, in arrival order; leaving early aborts them all."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, stream) -> None:
        try:
            async with aclosing(stream):
                async for delta in stream:
                    queue.put_nowait((index, delta))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            queue.put_nowait(exc)
            return
        queue.put_nowait(done)

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class GenerationService:
    def __init__(self, pool: ModelPool, meter: Meter, prompts: PromptPipeline):
        self.pool = pool
        self.meter = meter
        self.prompts = prompts

    def engine(self, model: str, viewer: Viewer, version: str | None = None) -> tuple[ModelRef, GenerationEngine]:
        return self.engine_of(self.pool.catalog.resolve(model, version, Task.TEXT_GENERATION, viewer))

    def engine_of(self, ref: ModelRef) -> tuple[ModelRef, GenerationEngine]:
        """The ready engine of an already resolved text-generation model."""
        if ref.spec.task is not Task.TEXT_GENERATION:
            raise InvalidRequest(f"model {ref.spec.id} is a {ref.spec.task.value} model, not a text-generation one",
                                 param="model")
        engine = self.pool.engine(ref)
        engine.ensure_ready()
        assert isinstance(engine, GenerationEngine)
        return ref, engine

    def run(self, ref: ModelRef, engine: GenerationEngine, prompts: list[list[int]], params: SamplingParams,
            ctx: RequestContext) -> Run:
        return Run(self, ref, engine, prompts, params, ctx)


def closing_chunks(last: dict, base: dict, usage: dict, include_usage: bool) -> list[dict]:
    """The stream's end: usage on the last chunk (DeepInfra's default), or on an extra
    ``choices: []`` chunk when the client set ``stream_options.include_usage`` (OpenAI's rule)."""
    if include_usage:
        return [last, {**base, "choices": [], "usage": usage}]
    return [{**last, "usage": usage}]


def common_params(engine: GenerationEngine, body, max_tokens: int, **extra) -> SamplingParams:
    """SamplingParams from the fields chat, completions and native requests share."""
    top_k = body.top_k if body.top_k is not None else 0
    return sampling_params(
        engine,
        max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=max(top_k, 0),
        min_p=body.min_p or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        seed=body.seed,
        stop=body.stop,
        logit_bias=getattr(body, "logit_bias", None),
        ignore_eos=bool(getattr(body, "ignore_eos", False)),
        **extra,
    )


def constraint_of(body) -> Constraint | None:
    """The structured-output constraint a request asks for (``response_format``), if any."""
    fmt = getattr(body, "response_format", None)
    if isinstance(fmt, dict):  # the native route takes it as a plain object
        try:
            fmt = ResponseFormat.model_validate(fmt)
        except ValueError:
            raise InvalidRequest("response_format.type must be text, json_object, json_schema or regex",
                                 param="response_format") from None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return Constraint.json_object()
    if fmt.type == "regex":
        if not fmt.regex:
            raise InvalidRequest("response_format of type regex needs `regex`", param="response_format")
        return Constraint.regex(fmt.regex)
    spec = fmt.json_schema or {}
    schema = spec.get("schema", spec.get("schema_"))
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format of type json_schema needs `json_schema.schema`, an object",
                             param="response_format")
    return Constraint.json_schema(schema)
