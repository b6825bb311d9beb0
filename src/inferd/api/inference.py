"""DeepInfra's native route: POST /v1/inference/{model}, JSON or multipart, any task.

The model's task picks the handler; each task adds one entry to ``HANDLERS``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from inferd.api.deps import AUDIO_TASKS, authenticated, model_upload
from inferd.api.disconnect import cancellable
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import NATIVE, dialect_route
from inferd.api.state import AppState, app_state
from inferd.catalog import ModelRef, Task
from inferd.errors import InvalidRequest
from inferd.api.streaming import sse_response
from inferd.protocol.inference import (
    EmbeddingsIn,
    EmbeddingsOut,
    FillMaskIn,
    FillMaskOut,
    QuestionAnsweringIn,
    QuestionAnsweringOut,
    Text2TextGenerationIn,
    Text2TextGenerationOut,
    TextClassificationIn,
    TextClassificationOut,
    TokenClassificationIn,
    TokenClassificationOut,
    ImageClassificationIn,
    ImageClassificationOut,
    ObjectDetectionIn,
    ObjectDetectionOut,
    RerankerIn,
    RerankerOut,
    SpeechRecognitionIn,
    SpeechRecognitionOut,
    TextGenerationIn,
    TextGenerationOut,
    TextToImageIn,
    TextToImageOut,
    TextToSpeechIn,
    TextToSpeechOut,
    ZeroShotImageClassificationIn,
)
from inferd.serving.context import RequestContext
from inferd.serving.embeddings import EmbedQuery, native_body
from inferd.serving.native_generation import native_events, native_response, start_native
from inferd.serving.rerank import RerankQuery
from inferd.serving.rerank import native_body as rerank_body
from inferd.serving.images import ImageQuery
from inferd.serving.images import native_body as image_body
from inferd.serving.speech import SpeechQuery, from_data_url
from inferd.serving.speech import native_body as speech_body
from inferd.serving.synthesis import AudioFormat, SpeakQuery, collect, native_speech_body
from inferd.serving.text_tasks import GENERATION_FIELDS, TextQuery
from inferd.serving.text_tasks import native_body as text_body
from inferd.serving.vision import VisionQuery
from inferd.serving.vision import native_body as vision_body

router = APIRouter(route_class=dialect_route(NATIVE), tags=["Native inference"])

Handler = Callable[[Request, dict, ModelRef, RequestContext, AppState], Awaitable[Any]]


def _validated(model: type[BaseModel], payload: dict) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


async def read_payload(request: Request, keep_files: bool = False) -> dict:
    """The request body as a dict: JSON, or form fields (repeated fields become lists); uploaded
    files as bytes, or with ``keep_files`` as the uploads themselves (spooled to disk)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded") and (await request.body()).lstrip()[:1] == b"{":
        content_type = "application/json"  # `curl -d '{...}'` without a Content-Type header
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        payload: dict[str, Any] = {}
        for key in form:
            values = [await v.read() if isinstance(v, UploadFile) and not keep_files else v
                      for v in form.getlist(key)]
            payload[key] = values if len(values) > 1 else values[0]
        return payload
    raw = await request.body()
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error", "input": {}}]
        ) from None
    if not isinstance(payload, dict):
        raise RequestValidationError(
            [{"type": "model_attributes_type", "loc": ("body",), "msg": "expected a JSON object", "input": payload}]
        )
    return payload


def _as_list(value: Any) -> Any:
    """Form fields arrive as strings: one input, or a JSON list of them."""
    if isinstance(value, str) and value.startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return [value]
    return [value] if isinstance(value, str) else value


async def embeddings(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    if "inputs" in payload and not isinstance(payload["inputs"], list):
        payload["inputs"] = _as_list(payload["inputs"])
    image = payload.pop("image", None)  # a file upload, a data URL or base64: embedded after the texts
    if image is not None and "inputs" not in payload:
        payload["inputs"] = []
    body: EmbeddingsIn = _validated(EmbeddingsIn, payload)
    query = EmbedQuery(model=ref.spec.id, version=ref.version.name, inputs=body.inputs, normalize=body.normalize,
                       images=[image] if image is not None else [])
    result = await cancellable(request, state.embeddings.embed(query, ctx))
    return FastJSONResponse(native_body(result, ctx))


async def text_generation(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    body: TextGenerationIn = _validated(TextGenerationIn, payload)
    run = await start_native(state.generation, body, ref, ctx)
    if body.stream:
        return await sse_response(request, native_events(run))
    return FastJSONResponse(await cancellable(request, native_response(run)))


async def reranker(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    for key in ("queries", "documents"):
        if key in payload and not isinstance(payload[key], list):
            payload[key] = _as_list(payload[key])
    body: RerankerIn = _validated(RerankerIn, payload)
    query = RerankQuery(model=ref.spec.id, version=ref.version.name, documents=body.documents, query=body.query,
                        queries=body.queries, instruction=body.instruction)
    result = await cancellable(request, state.rerank.rerank(query, ctx))
    return FastJSONResponse(rerank_body(result, ctx))


async def speech_recognition(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    body: SpeechRecognitionIn = _validated(SpeechRecognitionIn, payload)
    if isinstance(body.audio, UploadFile):
        audio = body.audio.file
    elif isinstance(body.audio, str):
        audio = from_data_url(body.audio, state.speech.max_bytes)
    else:
        raise InvalidRequest("audio must be a file upload, or a data URL (data:audio/...;base64,...)", param="audio")
    query = SpeechQuery(model=ref.spec.id, version=ref.version.name, audio=audio, task=body.task,
                        language=body.language, prompt=body.initial_prompt, temperature=body.temperature,
                        words=body.chunk_level == "word")
    transcript = await cancellable(request, state.speech.transcribe(query, ctx))
    return FastJSONResponse(speech_body(transcript, ctx, words=query.words))


async def text_to_speech(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    if "text" not in payload and isinstance(payload.get("input"), str):  # the OpenAI field name
        payload["text"] = payload["input"]
    body: TextToSpeechIn = _validated(TextToSpeechIn, payload)
    query = SpeakQuery(model=ref.spec.id, version=ref.version.name, text=body.text, voice=body.preset_voice,
                       speed=body.speed, fmt=AudioFormat(body.output_format))
    spoken = await state.synthesis.speak(query, ctx)
    audio = await cancellable(request, collect(spoken))
    return FastJSONResponse(native_speech_body(spoken, audio, ctx))


async def text_to_image(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    body: TextToImageIn = _validated(TextToImageIn, payload)
    query = ImageQuery(model=ref.spec.id, version=ref.version.name, prompt=body.prompt, n=body.num_images,
                       width=body.width, height=body.height, steps=body.num_inference_steps,
                       guidance=body.guidance_scale, negative_prompt=body.negative_prompt, seed=body.seed,
                       scheduler=body.scheduler)
    generated = await cancellable(request, state.images.generate(query, ctx))
    return FastJSONResponse(image_body(generated, ctx))


async def image_classification(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    body: ImageClassificationIn = _validated(ImageClassificationIn, payload)
    query = VisionQuery(model=ref.spec.id, version=ref.version.name, image=body.image, top_k=body.top_k)
    return FastJSONResponse(vision_body(await cancellable(request, state.vision.classify(query, ctx)), ctx))


async def zero_shot_image_classification(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext,
                                         state: AppState):
    if "candidate_labels" in payload and not isinstance(payload["candidate_labels"], list):
        payload["candidate_labels"] = _as_list(payload["candidate_labels"])
    body: ZeroShotImageClassificationIn = _validated(ZeroShotImageClassificationIn, payload)
    query = VisionQuery(model=ref.spec.id, version=ref.version.name, image=body.image, labels=body.candidate_labels)
    return FastJSONResponse(vision_body(await cancellable(request, state.vision.zero_shot(query, ctx)), ctx))


async def object_detection(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    body: ObjectDetectionIn = _validated(ObjectDetectionIn, payload)
    query = VisionQuery(model=ref.spec.id, version=ref.version.name, image=body.image, threshold=body.threshold)
    return FastJSONResponse(vision_body(await cancellable(request, state.vision.detect(query, ctx)), ctx))


async def text_classification(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    body: TextClassificationIn = _validated(TextClassificationIn, payload)
    query = TextQuery(model=ref.spec.id, version=ref.version.name, text=body.input,
                      top_k=None if body.return_all_scores else body.top_k)
    answered = await cancellable(request, state.text_tasks.classify(query, ctx))
    return FastJSONResponse(text_body(answered, ctx, Task.TEXT_CLASSIFICATION))


async def token_classification(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    body: TokenClassificationIn = _validated(TokenClassificationIn, payload)
    query = TextQuery(model=ref.spec.id, version=ref.version.name, text=body.input, strategy=body.aggregation_strategy)
    answered = await cancellable(request, state.text_tasks.label_tokens(query, ctx))
    return FastJSONResponse(text_body(answered, ctx, Task.TOKEN_CLASSIFICATION))


async def fill_mask(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    body: FillMaskIn = _validated(FillMaskIn, payload)
    query = TextQuery(model=ref.spec.id, version=ref.version.name, text=body.input, top_k=body.top_k)
    answered = await cancellable(request, state.text_tasks.fill_mask(query, ctx))
    return FastJSONResponse(text_body(answered, ctx, Task.FILL_MASK))


async def question_answering(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    body: QuestionAnsweringIn = _validated(QuestionAnsweringIn, payload)
    query = TextQuery(model=ref.spec.id, version=ref.version.name, text=body.context, question=body.question,
                      top_k=body.top_k, max_answer_len=body.max_answer_len)
    answered = await cancellable(request, state.text_tasks.answer(query, ctx))
    return FastJSONResponse(text_body(answered, ctx, Task.QUESTION_ANSWERING))


async def text2text_generation(request: Request, payload: dict, ref: ModelRef, ctx: RequestContext, state: AppState):
    if "input" not in payload and "text" in payload:  # the Hugging Face pipeline's name for it
        payload["input"] = payload.pop("text")
    body: Text2TextGenerationIn = _validated(Text2TextGenerationIn, payload)
    query = TextQuery(model=ref.spec.id, version=ref.version.name, text=body.input,
                      generation=body.model_dump(include=GENERATION_FIELDS))
    answered = await cancellable(request, state.text_tasks.rewrite(query, ctx))
    return FastJSONResponse(text_body(answered, ctx, Task.TEXT2TEXT_GENERATION))


HANDLERS: dict[Task, Handler] = {
    Task.EMBEDDINGS: embeddings,
    Task.TEXT_GENERATION: text_generation,
    Task.RERANKER: reranker,
    Task.AUTOMATIC_SPEECH_RECOGNITION: speech_recognition,
    Task.TEXT_TO_SPEECH: text_to_speech,
    Task.TEXT_TO_IMAGE: text_to_image,
    Task.IMAGE_CLASSIFICATION: image_classification,
    Task.ZERO_SHOT_IMAGE_CLASSIFICATION: zero_shot_image_classification,
    Task.OBJECT_DETECTION: object_detection,
    Task.TEXT_CLASSIFICATION: text_classification,
    Task.TOKEN_CLASSIFICATION: token_classification,
    Task.FILL_MASK: fill_mask,
    Task.QUESTION_ANSWERING: question_answering,
    Task.TEXT2TEXT_GENERATION: text2text_generation,
}
_IN = (EmbeddingsIn, TextGenerationIn, RerankerIn, SpeechRecognitionIn, TextToSpeechIn, TextToImageIn,
       ImageClassificationIn, ZeroShotImageClassificationIn, ObjectDetectionIn, TextClassificationIn,
       TokenClassificationIn, FillMaskIn, QuestionAnsweringIn, Text2TextGenerationIn)
_OUT = (EmbeddingsOut, TextGenerationOut, RerankerOut, SpeechRecognitionOut, TextToSpeechOut, TextToImageOut,
        ImageClassificationOut, ObjectDetectionOut, TextClassificationOut, TokenClassificationOut, FillMaskOut,
        QuestionAnsweringOut, Text2TextGenerationOut)

_OPENAPI = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"oneOf": [m.model_json_schema() for m in _IN]}},
            "multipart/form-data": {"schema": {"type": "object"}},
        }
    },
    "responses": {"200": {"content": {"application/json": {"schema": {"oneOf": [m.model_json_schema() for m in _OUT]}}}}},
}


@router.post("/v1/inference/{model:path}", openapi_extra=_OPENAPI, response_class=FastJSONResponse)
async def infer(
    model: str,
    request: Request,
    version: str | None = Query(None, description="a model version; also `MODEL:VERSION`"),
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
    _: None = Depends(model_upload),
):
    """Run a model in DeepInfra's native dialect; the body depends on the model's task."""
    ref = state.catalog.resolve(model, version, viewer=ctx.viewer)
    handler = HANDLERS.get(ref.spec.task)
    if handler is None:
        raise InvalidRequest(f"task {ref.spec.task.value} is not served on the native route yet")
    payload = await read_payload(request, keep_files=ref.spec.task in AUDIO_TASKS)
    return await handler(request, payload, ref, ctx, state)
