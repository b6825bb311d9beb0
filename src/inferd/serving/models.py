"""The model list, as each dialect shows it, with each model's load state."""

from __future__ import annotations

import time

from inferd.catalog import PUBLIC, Task, Viewer
from inferd.engine.base import Engine
from inferd.engine.pool import ModelPool
from inferd.serving.model_api import describe

_CREATED = int(time.time())
_INFINITY_CAPABILITIES = {Task.EMBEDDINGS: ["embed"], Task.RERANKER: ["rerank"]}


def _status(engine: Engine) -> dict:
    status = {"status": engine.state.value}
    if engine.error:
        status["error"] = engine.error
    return status


def _default_engines(pool: ModelPool, viewer: Viewer) -> list[Engine]:
    """One engine per model ``viewer`` sees: its default version."""
    return [pool.get(spec.id, viewer=viewer) for spec in pool.catalog.visible(viewer)]


def openai_models(pool: ModelPool, viewer: Viewer) -> dict:
    data = []
    for engine in _default_engines(pool, viewer):
        spec = engine.ref.spec
        context = spec.limits.context_length
        data.append({
            "id": spec.id,
            "object": "model",
            "created": _CREATED,
            "owned_by": spec.owned_by,
            "metadata": {
                **describe(spec),  # DeepInfra's model fields, as /models/{name} shows them
                "context_length": context,
                "task": spec.task.value,
                **_status(engine),
            },
        })
    return {"object": "list", "data": data}


def infinity_models(pool: ModelPool, viewer: Viewer) -> dict:
    data = []
    for engine in _default_engines(pool, viewer):
        spec = engine.ref.spec
        if spec.task not in _INFINITY_CAPABILITIES:
            continue
        data.append({
            "id": spec.id,
            "object": "model",
            "owned_by": "infinity",
            "created": _CREATED,
            "backend": spec.backend,
            "capabilities": _INFINITY_CAPABILITIES[spec.task] + (
                ["image_embed"] if "image" in getattr(getattr(engine, "backend", None), "modalities", ()) else []),
            "stats": {**engine.stats()},
        })
    return {"object": "list", "data": data}


def health(pool: ModelPool) -> dict:
    """The server's models (accounts' private deployments are neither shown nor counted: /deploy has them)."""
    models = {engine.ref.key: _status(engine) for engine in pool.engines() if PUBLIC.sees(engine.ref.spec)}
    ready = all(m["status"] == "ready" for m in models.values())
    return {"status": "ok" if ready else "degraded", "unix": time.time(), "models": models}
