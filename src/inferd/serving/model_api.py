"""DeepInfra's model API: what each served model is, costs and takes, from the catalog.

``/models/list`` and ``/models/{name}`` describe models in DeepInfra's fields (``model_name``,
``type``, ``reported_type``, ``tags``, ``pricing``, ``max_tokens``, ``deprecated``,
``replaced_by``, ``quantization``, ``private``), with inferd's own beside them (versions,
aliases, load status). ``/models/{name}/schema/{variant}`` gives a variant's request and
response JSON schemas, generated from the pydantic wire models that route validates with, so
they cannot drift from what the server accepts.
"""

from __future__ import annotations

from pydantic import BaseModel

from inferd.catalog import ModelSpec, Task, Viewer
from inferd.engine.base import Engine
from inferd.engine.pool import ModelPool
from inferd.errors import ModelNotFound
from inferd.protocol import inference, openai

# variant -> (request model, response model); "default" is the native /v1/inference/{model} route
SCHEMAS: dict[Task, dict[str, tuple[type[BaseModel], type[BaseModel]]]] = {
    Task.EMBEDDINGS: {
        "default": (inference.EmbeddingsIn, inference.EmbeddingsOut),
        "openai-embeddings": (openai.EmbeddingRequest, openai.EmbeddingResponse),
    },
    Task.RERANKER: {"default": (inference.RerankerIn, inference.RerankerOut)},
    Task.TEXT_GENERATION: {"default": (inference.TextGenerationIn, inference.TextGenerationOut)},
    Task.AUTOMATIC_SPEECH_RECOGNITION: {"default": (inference.SpeechRecognitionIn, inference.SpeechRecognitionOut)},
    Task.TEXT_TO_SPEECH: {"default": (inference.TextToSpeechIn, inference.TextToSpeechOut)},
    Task.TEXT_TO_IMAGE: {
        "default": (inference.TextToImageIn, inference.TextToImageOut),
        "openai-images": (openai.ImageGenerationRequest, openai.ImagesResponse),
    },
    Task.IMAGE_CLASSIFICATION: {"default": (inference.ImageClassificationIn, inference.ImageClassificationOut)},
    Task.ZERO_SHOT_IMAGE_CLASSIFICATION: {
        "default": (inference.ZeroShotImageClassificationIn, inference.ImageClassificationOut)},
    Task.OBJECT_DETECTION: {"default": (inference.ObjectDetectionIn, inference.ObjectDetectionOut)},
    Task.TEXT_CLASSIFICATION: {"default": (inference.TextClassificationIn, inference.TextClassificationOut)},
    Task.TOKEN_CLASSIFICATION: {"default": (inference.TokenClassificationIn, inference.TokenClassificationOut)},
    Task.FILL_MASK: {"default": (inference.FillMaskIn, inference.FillMaskOut)},
    Task.QUESTION_ANSWERING: {"default": (inference.QuestionAnsweringIn, inference.QuestionAnsweringOut)},
    Task.TEXT2TEXT_GENERATION: {"default": (inference.Text2TextGenerationIn, inference.Text2TextGenerationOut)},
}


def describe(spec: ModelSpec, engine: Engine | None = None) -> dict:
    """One model in DeepInfra's fields, and inferd's beside them."""
    info = {
        "model_name": spec.id,
        "type": spec.task.value,
        "reported_type": spec.task.value,
        "description": spec.description,
        "tags": list(spec.tags),
        "pricing": spec.pricing.model_dump() if spec.pricing else None,
        "max_tokens": spec.limits.context_length,
        "quantization": spec.quantization or spec.options.get("dtype"),
        "deprecated": spec.deprecated,
        "replaced_by": spec.replaced_by,
        "private": spec.private,  # the catalog's models are everyone's; a deployment's, its owner's
        "owner": spec.owned_by,
        "aliases": list(spec.aliases),
        "versions": [version.name for version in spec.versions],
        "schema_variants": sorted(SCHEMAS.get(spec.task, {})),
    }
    if engine is not None:
        info["status"] = engine.state.value
        if engine.error:
            info["error"] = engine.error
    return info


def model_list(pool: ModelPool, viewer: Viewer) -> list[dict]:
    return [describe(spec, pool.get(spec.id, viewer=viewer)) for spec in pool.catalog.visible(viewer)]


def schemas(spec: ModelSpec, variant: str) -> dict:
    variants = SCHEMAS.get(spec.task, {})
    if variant not in variants:
        known = ", ".join(sorted(variants)) or "none"
        raise ModelNotFound(f"The model `{spec.id}` has no such schema variant (it has: {known})", param="variant")
    request, response = variants[variant]
    return {"in_schema": request.model_json_schema(), "out_schema": response.model_json_schema()}


def model_detail(pool: ModelPool, name: str, viewer: Viewer) -> dict:
    engine = pool.get(name, viewer=viewer)
    spec = engine.ref.spec
    info = describe(spec, engine)
    if "default" in SCHEMAS.get(spec.task, {}):
        info.update(schemas(spec, "default"))
    return info


def model_schema(pool: ModelPool, name: str, variant: str, viewer: Viewer) -> dict:
    return schemas(pool.catalog.resolve(name, viewer=viewer).spec, variant)
