"""Schemathesis hooks for the fuzzing campaign (tests/e2e/test_fuzz.py): most generated requests
name a model the server serves, so they reach the serving code instead of stopping at a 404."""

from __future__ import annotations

import random

import schemathesis

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
RERANKER = "inferd/minilm-bi-encoder-reranker"
GENERATOR = "tiny"
_BY_PATH = (("embeddings", EMBEDDER), ("rerank", RERANKER))


def _model_for(path: str) -> str:
    for part, model in _BY_PATH:
        if part in path:
            return model
    return GENERATOR


@schemathesis.hook
def map_body(ctx, body):
    if isinstance(body, dict) and random.random() < 0.85:
        body["model"] = _model_for(ctx.operation.path)
    return body


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    if path_parameters and "model" in path_parameters and random.random() < 0.85:
        path_parameters["model"] = random.choice((EMBEDDER, RERANKER, GENERATOR))
    return path_parameters
