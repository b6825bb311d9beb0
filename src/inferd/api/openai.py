"""OpenAI-compatible routes, mounted at /v1/openai and /v1."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse

from inferd.api.deps import audio_upload, authenticated
from inferd.api.disconnect import cancellable
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import OPENAI, dialect_route
from inferd.api.state import AppState, app_state
from inferd.api.streaming import bytes_response, sse_response
from inferd.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    ImageGenerationRequest,
    ImagesResponse,
    ModelList,
    SpeechRequest,
)
from inferd.serving.context import RequestContext
from inferd.serving.embeddings import EmbedQuery, openai_body
from inferd.serving.images import ImageQuery
from inferd.serving.images import openai_body as images_body
from inferd.serving.openai_chat import chat_chunks, chat_response, start_chat
from inferd.serving.openai_completions import completion_chunks, completion_response, start_completion
from inferd.serving.models import openai_models
from inferd.serving.speech import SpeechQuery, openai_events
from inferd.serving.synthesis import AudioFormat, SpeakQuery, speech_events
from inferd.serving.speech import openai_body as speech_body

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 503)}

router = APIRouter(route_class=dialect_route(OPENAI), tags=["OpenAI"], responses=_ERRORS)


def as_input_list(value) -> list:
    """A string or one list of token ids is one input; anything else already is a list."""
    if isinstance(value, str) or (value and isinstance(value[0], int)):
        return [value]
    return list(value)


@router.post("/embeddings", response_model=EmbeddingResponse, response_class=FastJSONResponse)
async def create_embeddings(
    body: EmbeddingRequest,
    request: Request,
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    query = EmbedQuery(model=body.model, inputs=as_input_list(body.input), dimensions=body.dimensions)
    result = await cancellable(request, state.embeddings.embed(query, ctx))
    return FastJSONResponse(openai_body(result, body.encoding_format))


@router.get("/models", response_model=ModelList, response_class=FastJSONResponse)
async def list_models(
    ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)
):
    return FastJSONResponse(openai_models(state.pool, ctx.viewer))


def _include_usage(body) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


@router.post("/chat/completions", response_class=FastJSONResponse)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    """Chat with a text-generation model; `stream: true` answers with Server-Sent Events."""
    run = await start_chat(state.generation, body, ctx)
    if body.stream:
        return await sse_response(request, chat_chunks(run, body.model, _include_usage(body)))
    return FastJSONResponse(await cancellable(request, chat_response(run, body.model)))


@router.post("/completions", response_class=FastJSONResponse)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    """Complete a prompt (or several) with a text-generation model, streaming or not."""
    run = await start_completion(state.generation, body, ctx)
    if body.stream:
        return await sse_response(request, completion_chunks(run, body.model, body.echo, _include_usage(body)))
    return FastJSONResponse(await cancellable(request, completion_response(run, body.model, body.echo)))


# --- audio: multipart uploads (spooled to disk, under their own size limit: max_audio_bytes)
Text = Annotated[str | None, Form(max_length=4000)]
Format = Annotated[Literal["json", "text", "srt", "vtt", "verbose_json"], Form()]


async def _speech(request: Request, query: SpeechQuery, ctx: RequestContext, state: AppState, response_format: str,
                  granularities: list[str], stream: bool):
    if stream:
        return await sse_response(request, openai_events(state.speech.stream(query, ctx)))
    transcript = await cancellable(request, state.speech.transcribe(query, ctx))
    body = speech_body(transcript, response_format, granularities, query.temperature)
    if isinstance(body, str):
        return PlainTextResponse(body)
    return FastJSONResponse(body)


@router.post("/audio/transcriptions", dependencies=[Depends(audio_upload)], response_class=FastJSONResponse)
async def create_transcription(
    request: Request,
    file: Annotated[UploadFile, File(description="the audio: wav, mp3, m4a, ogg, opus, flac, webm, ...")],
    model: Annotated[str, Form(max_length=256)],
    language: Annotated[str | None, Form(max_length=40)] = None,
    prompt: Text = None,
    response_format: Format = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
    timestamp_granularities: Annotated[list[Literal["segment", "word"]], Form(alias="timestamp_granularities[]")] = [],  # noqa: B006
    stream: Annotated[bool, Form()] = False,
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    """Transcribe audio in its own language (whisper); `stream=true` answers with text deltas."""
    words = "word" in timestamp_granularities and response_format == "verbose_json"
    query = SpeechQuery(model=model, audio=file.file, language=language, prompt=prompt, temperature=temperature,
                        words=words)
    return await _speech(request, query, ctx, state, response_format, list(timestamp_granularities), stream)


@router.post("/audio/translations", dependencies=[Depends(audio_upload)], response_class=FastJSONResponse)
async def create_translation(
    request: Request,
    file: Annotated[UploadFile, File(description="the audio, in any language whisper knows")],
    model: Annotated[str, Form(max_length=256)],
    prompt: Text = None,
    response_format: Format = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    """Translate speech into English text (a multilingual whisper model)."""
    query = SpeechQuery(model=model, audio=file.file, task="translate", prompt=prompt, temperature=temperature)
    return await _speech(request, query, ctx, state, response_format, [], False)


@router.post("/audio/speech", response_class=FastJSONResponse,
             responses={200: {"content": {m: {} for m in ("audio/mpeg", "audio/ogg", "audio/aac", "audio/flac",
                                                          "audio/wav", "audio/pcm", "text/event-stream")}}})
async def create_speech(
    body: SpeechRequest,
    request: Request,
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    """Speak text (text to speech), streamed as it is made, sentence by sentence."""
    query = SpeakQuery(model=body.model, text=body.input, voice=body.voice, speed=body.speed,
                       fmt=AudioFormat(body.response_format))
    spoken = await state.synthesis.speak(query, ctx)
    if body.stream_format == "sse":
        return await sse_response(request, speech_events(spoken))
    return await bytes_response(request, spoken.chunks, query.fmt.media_type)


# --- images
@router.post("/images/generations", response_model=ImagesResponse, response_class=FastJSONResponse)
async def create_image(
    body: ImageGenerationRequest,
    request: Request,
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    """Draw images from a prompt (text to image); PNGs as base64, or as data URLs with `response_format: url`."""
    query = ImageQuery(model=body.model, prompt=body.prompt, n=body.n, size=body.size or "1024x1024",
                       quality=body.quality)
    generated = await cancellable(request, state.images.generate(query, ctx))
    return FastJSONResponse(images_body(generated, body.response_format))


ImageFile = Annotated[UploadFile, File(description="a PNG, JPEG or WebP image")]
ImageFormat = Annotated[Literal["b64_json", "url"], Form()]


@router.post("/images/edits", response_model=ImagesResponse, response_class=FastJSONResponse)
async def edit_image(
    request: Request,
    image: ImageFile,
    prompt: Annotated[str, Form(max_length=4000)],
    mask: Annotated[UploadFile | None, File(description="a PNG; transparent where to paint (else the image's own "
                                                        "transparency)")] = None,
    model: Annotated[str | None, Form(max_length=256)] = None,
    n: Annotated[int, Form()] = 1,
    size: Annotated[str | None, Form(max_length=20)] = None,
    response_format: ImageFormat = "b64_json",
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    """Paint the masked (transparent) part of an image after a prompt (inpainting)."""
    query = ImageQuery(model=model, prompt=prompt, n=n, size=size or "1024x1024", mode="inpaint",
                       image=await image.read(), mask=await mask.read() if mask is not None else None)
    generated = await cancellable(request, state.images.generate(query, ctx))
    return FastJSONResponse(images_body(generated, response_format))


@router.post("/images/variations", response_model=ImagesResponse, response_class=FastJSONResponse)
async def vary_image(
    request: Request,
    image: ImageFile,
    model: Annotated[str | None, Form(max_length=256)] = None,
    n: Annotated[int, Form()] = 1,
    size: Annotated[str | None, Form(max_length=20)] = None,
    response_format: ImageFormat = "b64_json",
    prompt: Annotated[str, Form(max_length=4000)] = "",
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    """Variations of an image (image to image); a `prompt` may steer them."""
    query = ImageQuery(model=model, prompt=prompt, n=n, size=size or "1024x1024", mode="image",
                       image=await image.read())
    generated = await cancellable(request, state.images.generate(query, ctx))
    return FastJSONResponse(images_body(generated, response_format))
