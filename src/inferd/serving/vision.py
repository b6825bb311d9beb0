"""Image understanding on the encoder engine: image classification, zero-shot image classification
(an image against candidate labels, CLIP/SigLIP) and object detection, in DeepInfra's native shapes.
Images from many requests share the engine's batches; each is decoded off the event loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from inferd.catalog import Task, Units
from inferd.engine.encoder import EncodeResult, EncoderModel
from inferd.engine.pool import ModelPool
from inferd.errors import InputTooLarge, InvalidRequest
from inferd.serving.context import RequestContext
from inferd.serving.image_inputs import load_image
from inferd.serving.metering import Charge, Meter, inference_status
from inferd.settings import Settings

MAX_LABELS = 256


@dataclass(slots=True)
class VisionQuery:
    model: str
    image: object  # bytes, a data URL, base64 (or an http(s) URL where fetching is on)
    version: str | None = None
    labels: list[str] | None = None  # zero-shot: the candidate labels
    top_k: int | None = None  # classification: the best k (all when None)
    threshold: float = 0.5  # detection: the least score of an object shown


@dataclass(slots=True)
class Seen:
    results: list[dict]
    input_tokens: int
    charge: Charge


class VisionService:
    def __init__(self, pool: ModelPool, meter: Meter, settings: Settings):
        self._pool = pool
        self._meter = meter
        self._settings = settings

    async def _run(self, task: Task, query: VisionQuery, ctx: RequestContext, finish, texts: Sequence[str] = ()):
        engine = self._pool.get(query.model, query.version, task, ctx.viewer)
        await engine.ready()
        assert isinstance(engine, EncoderModel)
        async with self._meter.track(ctx, engine.ref) as metered:
            image = await load_image(query.image, self._settings)
            # answered where the model runs (a Ray Serve replica's backend holds the labels)
            results, tokens = await engine.answer([image, *texts], partial(finish, image=image.image.size))
            charge = metered.charge(Units(input_tokens=tokens))
        return Seen(results, tokens, charge)

    async def classify(self, query: VisionQuery, ctx: RequestContext) -> Seen:
        if query.top_k is not None and query.top_k < 1:
            raise InvalidRequest("top_k must be at least 1", param="top_k")
        return await self._run(Task.IMAGE_CLASSIFICATION, query, ctx, partial(_classified, query.top_k))

    async def zero_shot(self, query: VisionQuery, ctx: RequestContext) -> Seen:
        labels = query.labels or []
        if not labels or not all(isinstance(label, str) and label.strip() for label in labels):
            raise InvalidRequest("candidate_labels must be a list of non-empty strings", param="candidate_labels")
        if len(labels) > MAX_LABELS:
            raise InputTooLarge(f"at most {MAX_LABELS} candidate_labels", param="candidate_labels")
        return await self._run(Task.ZERO_SHOT_IMAGE_CLASSIFICATION, query, ctx, partial(_zero_shot, list(labels)),
                               list(labels))

    async def detect(self, query: VisionQuery, ctx: RequestContext) -> Seen:
        if not 0 <= query.threshold <= 1:
            raise InvalidRequest("threshold must be between 0 and 1", param="threshold")
        return await self._run(Task.OBJECT_DETECTION, query, ctx, partial(_detected, query.threshold))


# each task's answer from the rows (``EncoderModel.answer``'s ``finish``: run where the model is);
# ``image`` is the image's (width, height); each returns (results, input tokens)

def _classified(top_k: int | None, backend, result: EncodeResult, image: tuple[int, int]) -> tuple[list[dict], int]:
    logits = result.embeddings[0].astype(np.float64)
    if backend.multi_label:
        scores = 1.0 / (1.0 + np.exp(-logits))
    else:
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
    order = np.argsort(-scores)[: top_k or len(scores)]
    return [{"label": backend.labels[i], "score": float(scores[i])} for i in order], result.input_tokens


def _zero_shot(labels: list[str], backend, result: EncodeResult, image: tuple[int, int]) -> tuple[list[dict], int]:
    scores = backend.zero_shot(result.embeddings[0], result.embeddings[1:])
    order = np.argsort(-scores, kind="stable")
    return [{"label": labels[i], "score": float(scores[i])} for i in order], result.input_tokens


def _detected(threshold: float, backend, result: EncodeResult, image: tuple[int, int]) -> tuple[list[dict], int]:
    width, height = image
    return backend.detections(result.embeddings[0], width, height, threshold), result.input_tokens


def native_body(seen: Seen, ctx: RequestContext) -> dict:
    return {"results": seen.results, "request_id": ctx.request_id,
            "inference_status": inference_status(seen.charge, seen.input_tokens)}
