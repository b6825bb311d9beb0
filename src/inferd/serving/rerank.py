"""Rerank: one call for every dialect (DeepInfra native, Cohere v1/v2, Infinity), then each
dialect's response shape.

Every reranker runs on the encoder engine, so pairs from many requests share batches.
Pair scorers (cross-encoders, LM judges) get one ``RerankPair`` per document; bi-encoders
get the distinct queries and the documents as texts, and a pair's raw score is the cosine
of their embeddings. The backend maps raw scores to relevance in [0, 1].
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inferd.backends.base import RerankPair
from inferd.catalog import ModelRef, Task, Units
from inferd.engine.encoder import EncoderModel
from inferd.engine.pool import ModelPool
from inferd.errors import InputTooLarge, InvalidRequest
from inferd.serving.context import RequestContext
from inferd.serving.embeddings import l2_normalise
from inferd.serving.metering import Charge, Meter, inference_status
from inferd.settings import Settings


@dataclass(slots=True)
class RerankQuery:
    model: str
    documents: Sequence[str]
    query: str | None = None
    queries: Sequence[str] | None = None  # one per document (DeepInfra native, as LiteLLM sends)
    instruction: str | None = None  # LM judges only
    max_tokens_per_doc: int | None = None  # Cohere v2
    version: str | None = None


@dataclass(slots=True)
class Reranked:
    ref: ModelRef
    scores: np.ndarray  # relevance in [0, 1], in input order
    raw: np.ndarray  # the backend's raw scores (logits, or cosines for bi-encoders)
    input_tokens: int
    charge: Charge

    def ranked(self, top_n: int | None = None) -> list[int]:
        """Document indices by descending relevance (ties keep input order), cut to top_n."""
        order = sorted(range(len(self.scores)), key=lambda i: -float(self.scores[i]))
        return order[:top_n] if top_n else order


class RerankService:
    def __init__(self, pool: ModelPool, meter: Meter, settings: Settings):
        self._pool = pool
        self._meter = meter
        self._max_inputs = settings.max_inputs_per_request

    async def rerank(self, query: RerankQuery, ctx: RequestContext) -> Reranked:
        engine = self._pool.get(query.model, query.version, Task.RERANKER, ctx.viewer)
        await engine.ready()
        assert isinstance(engine, EncoderModel)  # the pool serves rerankers with a RerankBackend's facts
        backend = engine.backend
        async with self._meter.track(ctx, engine.ref) as metered:
            queries = self._validate(query, engine)
            documents = list(query.documents)
            if query.max_tokens_per_doc is not None:
                documents = await engine.cut(documents, query.max_tokens_per_doc)
            if backend.scoring == "pairs":
                pairs = [RerankPair(q, d, query.instruction) for q, d in zip(queries, documents, strict=True)]
                result = await engine.embed(pairs)
                raw = result.embeddings[:, 0].astype(np.float64)
            else:
                distinct = list(dict.fromkeys(queries))
                result = await engine.embed(distinct + documents)
                vectors = l2_normalise(result.embeddings.astype(np.float64))
                where = {q: i for i, q in enumerate(distinct)}
                query_rows = vectors[[where[q] for q in queries]]
                raw = np.einsum("ij,ij->i", query_rows, vectors[len(distinct):])
            scores = backend.to_unit(raw)
            charge = metered.charge(Units(input_tokens=result.input_tokens))
        return Reranked(engine.ref, scores, raw, result.input_tokens, charge)

    def _validate(self, query: RerankQuery, engine: EncoderModel) -> list[str]:
        """The query of each document; raises a clear 4xx for what cannot be scored."""
        documents = query.documents
        if not documents:
            raise InvalidRequest("documents must not be empty", param="documents")
        limit = min(engine.ref.spec.limits.max_inputs or self._max_inputs, self._max_inputs)
        if len(documents) > limit:
            raise InputTooLarge(f"{len(documents)} documents in one request; at most {limit}", param="documents")
        if query.queries is not None:
            queries = list(query.queries)
            if len(queries) == 1:
                queries = queries * len(documents)
            if len(queries) != len(documents):
                raise InvalidRequest(
                    f"queries has {len(queries)} entries for {len(documents)} documents; give one query, "
                    "or one per document",
                    param="queries",
                )
        elif query.query is not None:
            queries = [query.query] * len(documents)
        else:
            raise InvalidRequest("a query is required", param="query")
        if any(not q.strip() for q in queries):
            raise InvalidRequest("the query must not be empty", param="query" if query.queries is None else "queries")
        return queries


# ---------------------------------------------------------------- dialect shapes
def native_body(result: Reranked, ctx: RequestContext) -> dict:
    return {
        "scores": [float(x) for x in result.scores],
        "input_tokens": result.input_tokens,
        "request_id": ctx.request_id,
        "inference_status": inference_status(result.charge, result.input_tokens),
    }


def cohere_body(result: Reranked, documents: Sequence[str], top_n: int | None, return_documents: bool, version: int) -> dict:
    results = []
    for index in result.ranked(top_n):
        item: dict = {"index": index, "relevance_score": float(result.scores[index])}
        if return_documents and version == 1:
            item["document"] = {"text": documents[index]}
        results.append(item)
    meta: dict = {"api_version": {"version": str(version)}, "billed_units": {"search_units": 1}}
    if version == 2:
        meta["tokens"] = {"input_tokens": result.input_tokens, "output_tokens": 0}
    return {"id": str(uuid.uuid4()), "results": results, "meta": meta}


def infinity_body(result: Reranked, documents: Sequence[str], top_n: int | None, return_documents: bool,
                  raw_scores: bool, model: str) -> dict:
    values = result.raw if raw_scores else result.scores
    results = []
    for index in result.ranked(top_n):
        item: dict = {"relevance_score": float(values[index]), "index": index}
        if return_documents:
            item["document"] = documents[index]
        results.append(item)
    return {
        "object": "rerank",
        "results": results,
        "model": model,
        "usage": {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens},
        "id": f"infinity-{uuid.uuid4()}",
        "created": int(time.time()),
    }
