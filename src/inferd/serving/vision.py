"""Image understanding on the encoder engine: image classification, zero-shot image classification
(an image against candidate labels, CLIP/SigLIP) and object detection, in DeepInfra's native shapes.
Images from many requests share the engine's batches; each is decoded off the event loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inferd.catalog import Task, Units
from inferd.engine.encoder import EncoderModel
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

    async def _run(self, task: Task, query: VisionQuery, ctx: RequestContext, texts: list[str] = ()):
        engine = self._pool.get(query.model, query.version, task, ctx.viewer)
        await engine.ready()
        assert isinstance(engine, EncoderModel)
        async with self._meter.track(ctx, engine.ref) as metered:
            image = await load_image(query.image, self._settings)
            result = await engine.embed([image, *texts])
            charge = metered.charge(Units(input_tokens=result.input_tokens))
        return engine, image, result, charge

    async def classify(self, query: VisionQuery, ctx: RequestContext) -> Seen:
        if query.top_k is not None and query.top_k < 1:
            raise InvalidRequest("top_k must be at least 1", param="top_k")
        engine, _, result, charge = await self._run(Task.IMAGE_CLASSIFICATION, query, ctx)
        backend = engine.backend
        logits = result.embeddings[0].astype(np.float64)
        if backend.multi_label:
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            scores = np.exp(logits - logits.max())
            scores /= scores.sum()
        order = np.argsort(-scores)[: query.top_k or len(scores)]
        results = [{"label": backend.labels[i], "score": float(scores[i])} for i in order]
        return Seen(results, result.input_tokens, charge)

    async def zero_shot(self, query: VisionQuery, ctx: RequestContext) -> Seen:
        labels = query.labels or []
        if not labels or not all(isinstance(label, str) and label.strip() for label in labels):
            raise InvalidRequest("candidate_labels must be a list of non-empty strings", param="candidate_labels")
        if len(labels) > MAX_LABELS:
            raise InputTooLarge(f"at most {MAX_LABELS} candidate_labels", param="candidate_labels")
        engine, _, result, charge = await self._run(Task.ZERO_SHOT_IMAGE_CLASSIFICATION, query, ctx, list(labels))
        scores = engine.backend.zero_shot(result.embeddings[0], result.embeddings[1:])
        order = np.argsort(-scores, kind="stable")
        results = [{"label": labels[i], "score": float(scores[i])} for i in order]
        return Seen(results, result.input_tokens, charge)

    async def detect(self, query: VisionQuery, ctx: RequestContext) -> Seen:
        if not 0 <= query.threshold <= 1:
            raise InvalidRequest("threshold must be between 0 and 1", param="threshold")
        engine, image, result, charge = await self._run(Task.OBJECT_DETECTION, query, ctx)
        width, height = image.image.size
        results = engine.backend.detections(result.embeddings[0], width, height, query.threshold)
        return Seen(results, result.input_tokens, charge)


def native_body(seen: Seen, ctx: RequestContext) -> dict:
    return {"results": seen.results, "request_id": ctx.request_id,
            "inference_status": inference_status(seen.charge, seen.input_tokens)}
