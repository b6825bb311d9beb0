"""Embeddings: one call for every dialect, then each dialect's response shape."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inferd.catalog import ModelRef, Task, Units
from inferd.engine.encoder import EncoderModel
from inferd.engine.pool import ModelPool
from inferd.errors import InputTooLarge, InvalidRequest, UnsupportedInput
from inferd.serving.context import RequestContext
from inferd.serving.image_inputs import load_image
from inferd.serving.metering import Charge, Meter, inference_status
from inferd.settings import Settings


@dataclass(slots=True)
class EmbedQuery:
    model: str
    inputs: Sequence[str] | Sequence[Sequence[int]]
    version: str | None = None
    normalize: bool = False
    dimensions: int | None = None
    images: Sequence = ()  # images to embed after the texts: uploads, data URLs, base64 (image models)
    image_param: str = "image"  # where the request named them (Infinity: its ``modality``)


@dataclass(slots=True)
class Embedded:
    ref: ModelRef
    vectors: np.ndarray  # float32 [n, d]
    input_tokens: int
    charge: Charge


class EmbeddingService:
    def __init__(self, pool: ModelPool, meter: Meter, settings: Settings):
        self._pool = pool
        self._meter = meter
        self._max_inputs = settings.max_inputs_per_request
        self._settings = settings

    async def embed(self, query: EmbedQuery, ctx: RequestContext) -> Embedded:
        engine = self._pool.get(query.model, query.version, Task.EMBEDDINGS, ctx.viewer)
        await engine.ready()
        assert isinstance(engine, EncoderModel)
        async with self._meter.track(ctx, engine.ref) as metered:
            self._validate(query, engine)
            inputs = list(query.inputs) + [await load_image(value, self._settings) for value in query.images]
            result = await engine.embed(inputs)
            vectors = _postprocess(result.embeddings, query, engine.backend.normalizes)
            charge = metered.charge(Units(input_tokens=result.input_tokens))
        return Embedded(engine.ref, vectors, result.input_tokens, charge)

    def _validate(self, query: EmbedQuery, engine: EncoderModel) -> None:
        inputs = query.inputs
        modalities = engine.backend.modalities
        if query.images and "image" not in modalities:
            raise UnsupportedInput(f"model {engine.name} embeds text only, not images", param=query.image_param)
        if inputs and "text" not in modalities:
            raise UnsupportedInput(f"model {engine.name} embeds images only, not text; send them with "
                                   "modality 'image' or as `image`", param="input")
        count = len(inputs) + len(query.images)
        if not count:
            raise InvalidRequest("input must not be empty", param="input")
        limit = min(engine.ref.spec.limits.max_inputs or self._max_inputs, self._max_inputs)
        if count > limit:
            raise InputTooLarge(f"{count} inputs in one request; at most {limit}", param="input")
        vocab = engine.backend.vocab_size
        for position, item in enumerate(inputs):
            if isinstance(item, str):
                if not item:
                    raise InvalidRequest(f"input[{position}] is an empty string", param="input")
            elif not item:
                raise InvalidRequest(f"input[{position}] is an empty list of token ids", param="input")
            elif max(item) >= vocab:
                raise InvalidRequest(
                    f"input[{position}] has token id {max(item)}; this model's vocabulary has {vocab}",
                    param="input",
                )
        dims = engine.backend.dimensions
        if query.dimensions is not None and not 1 <= query.dimensions <= dims:
            raise InvalidRequest(
                f"dimensions must be between 1 and {dims} for this model, not {query.dimensions}",
                param="dimensions",
            )


def _postprocess(vectors: np.ndarray, query: EmbedQuery, normalized: bool) -> np.ndarray:
    """Matryoshka cut to ``dimensions`` (re-normalised when the model normalises), and
    the native ``normalize`` flag."""
    if query.dimensions is not None and query.dimensions < vectors.shape[1]:
        vectors = vectors[:, : query.dimensions]
        if normalized:
            vectors = l2_normalise(vectors)
    if query.normalize and not normalized:
        vectors = l2_normalise(vectors)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------- dialect shapes
def _encode(vector: np.ndarray, encoding_format: str | None) -> np.ndarray | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode()
    return vector


def _data(result: Embedded, encoding_format: str | None) -> list[dict]:
    return [
        {"object": "embedding", "index": i, "embedding": _encode(row, encoding_format)}
        for i, row in enumerate(result.vectors)
    ]


def openai_body(result: Embedded, encoding_format: str | None) -> dict:
    return {
        "object": "list",
        "data": _data(result, encoding_format),
        "model": result.ref.spec.id,
        "usage": {
            "prompt_tokens": result.input_tokens,
            "total_tokens": result.input_tokens,
            "estimated_cost": result.charge.cost_usd,
        },
    }


def infinity_body(result: Embedded, encoding_format: str | None, ctx: RequestContext) -> dict:
    return {
        "object": "list",
        "data": _data(result, encoding_format),
        "model": result.ref.spec.id,
        "usage": {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens},
        "id": f"infinity-{ctx.request_id}",
        "created": int(time.time()),
    }


def native_body(result: Embedded, ctx: RequestContext) -> dict:
    return {
        "embeddings": result.vectors,
        "input_tokens": result.input_tokens,
        "request_id": ctx.request_id,
        "inference_status": inference_status(result.charge, result.input_tokens),
    }
