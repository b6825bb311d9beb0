"""OpenAI-compatible routes, mounted at /v1/openai and /v1."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from inferd.api.deps import authenticated
from inferd.api.disconnect import cancellable
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import OPENAI, dialect_route
from inferd.api.state import AppState, app_state
from inferd.api.streaming import sse_response
from inferd.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    ModelList,
)
from inferd.serving.context import RequestContext
from inferd.serving.embeddings import EmbedQuery, openai_body
from inferd.serving.openai_chat import chat_chunks, chat_response, start_chat
from inferd.serving.openai_completions import completion_chunks, completion_response, start_completion
from inferd.serving.models import openai_models

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
    _: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)
):
    return FastJSONResponse(openai_models(state.pool))


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
