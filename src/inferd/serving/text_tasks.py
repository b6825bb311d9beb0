"""The classic text tasks on the encoder engine, in DeepInfra's native shapes:
text-classification, token-classification, fill-mask, question-answering and
text2text-generation. Inputs from many requests share the engine's batches; the backend turns
each input's row (and what tokenisation kept) into the answer."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from inferd.backends.seq2seq import GenerationParams, Text2TextInput
from inferd.backends.text_tasks import QuestionInput
from inferd.catalog import Task, Units
from inferd.engine.encoder import EncodeResult, EncoderModel
from inferd.engine.pool import ModelPool
from inferd.errors import InputTooLarge, InvalidRequest
from inferd.serving.context import RequestContext
from inferd.serving.metering import Charge, Meter, inference_status


# text2text-generation's settings, as the request names them
GENERATION_FIELDS = frozenset({"max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "num_beams"})


@dataclass(slots=True)
class TextQuery:
    model: str
    text: str
    version: str | None = None
    top_k: int | None = 1  # classification: labels (None: all); fill-mask: tokens; QA: answers
    strategy: str = "simple"  # token-classification's aggregation
    question: str | None = None  # question-answering
    max_answer_len: int = 15
    generation: dict | None = None  # text2text: GENERATION_FIELDS


@dataclass(slots=True)
class Answered:
    body: Any  # the task's result: a list of results, or (QA) a list of answers
    input_tokens: int
    charge: Charge
    generated_tokens: int = 0


class TextTaskService:
    def __init__(self, pool: ModelPool, meter: Meter):
        self._pool = pool
        self._meter = meter

    async def _run(self, task: Task, query: TextQuery, ctx: RequestContext, item, check=None):
        engine = self._pool.get(query.model, query.version, task, ctx.viewer)
        await engine.ready()
        assert isinstance(engine, EncoderModel)
        async with self._meter.track(ctx, engine.ref) as metered:
            # answered where the model runs (a Ray Serve replica's backend holds the labels)
            answer, tokens, generated = await engine.answer([item], partial(_answer, task, query), check)
            charge = metered.charge(Units(input_tokens=tokens, output_tokens=generated))
        return Answered(answer, tokens, charge, generated)

    async def classify(self, query: TextQuery, ctx: RequestContext) -> Answered:
        return await self._run(Task.TEXT_CLASSIFICATION, query, ctx, query.text)

    async def label_tokens(self, query: TextQuery, ctx: RequestContext) -> Answered:
        return await self._run(Task.TOKEN_CLASSIFICATION, query, ctx, query.text)

    async def fill_mask(self, query: TextQuery, ctx: RequestContext) -> Answered:
        return await self._run(Task.FILL_MASK, query, ctx, query.text, partial(_one_mask, query.text))

    async def answer(self, query: TextQuery, ctx: RequestContext) -> Answered:
        return await self._run(Task.QUESTION_ANSWERING, query, ctx, QuestionInput(query.question or "", query.text))

    async def rewrite(self, query: TextQuery, ctx: RequestContext) -> Answered:
        item = Text2TextInput(query.text, GenerationParams(**(query.generation or {})))
        return await self._run(Task.TEXT2TEXT_GENERATION, query, ctx, item)


def _one_mask(text: str, backend) -> None:
    mask = backend.mask_token
    if text.count(mask) != 1:
        raise InvalidRequest(f"the input must hold the model's mask token {mask} exactly once "
                             f"(it holds it {text.count(mask)} times)", param="input")


def _answer(task: Task, query: TextQuery, backend, result: EncodeResult) -> tuple[Any, int, int]:
    """The answer, the input's tokens and the tokens generated."""
    row = result.rows[0]
    detail = result.details[0] if result.details else None
    tokens = result.input_tokens
    if task is Task.TEXT_CLASSIFICATION:
        return backend.labelled(row, query.top_k), tokens, 0
    if task is Task.TOKEN_CLASSIFICATION:
        return backend.entities(query.text, row, detail, query.strategy), tokens, 0
    if task is Task.FILL_MASK:
        if detail.position is None:
            raise InputTooLarge("the mask token lies beyond the model's context; shorten the text before it",
                                param="input")
        return backend.fills(row, detail, query.top_k or 5), tokens, 0
    if task is Task.QUESTION_ANSWERING:
        answers = backend.answers(row, detail, query.text, query.top_k or 1, query.max_answer_len)
        if not answers:
            raise InvalidRequest("the question leaves no room for the context in the model's input", param="question")
        return answers, tokens, 0
    text, generated, tokens = row
    return [{"generated_text": text}], tokens, generated


def native_body(answered: Answered, ctx: RequestContext, task: Task) -> dict:
    status = inference_status(answered.charge, answered.input_tokens, answered.generated_tokens)
    if task is Task.QUESTION_ANSWERING:
        best = answered.body[0]
        extra = {"answers": answered.body} if len(answered.body) > 1 else {}
        return {**best, **extra, "request_id": ctx.request_id, "inference_status": status}
    body = {"results": answered.body, "request_id": ctx.request_id, "inference_status": status}
    if task is Task.TEXT2TEXT_GENERATION:
        body.update(num_tokens=answered.generated_tokens, num_input_tokens=answered.input_tokens)
    return body
