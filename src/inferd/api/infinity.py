"""Infinity's API: /embeddings, /rerank and /models under a configurable prefix (the root by default)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from inferd.api.deps import authenticated
from inferd.api.disconnect import cancellable
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import INFINITY, dialect_route
from inferd.api.state import AppState, app_state
from inferd.errors import UnsupportedInput
from inferd.protocol.infinity import (
    InfinityEmbeddingRequest,
    InfinityModelList,
    InfinityRerankRequest,
    InfinityRerankResponse,
)
from inferd.protocol.openai import EmbeddingResponse
from inferd.serving.context import RequestContext
from inferd.serving.embeddings import EmbedQuery, infinity_body
from inferd.serving.models import health, infinity_models
from inferd.serving.rerank import RerankQuery
from inferd.serving.rerank import infinity_body as rerank_body

router = APIRouter(route_class=dialect_route(INFINITY), tags=["Infinity"])


@router.post("/embeddings", response_model=EmbeddingResponse, response_class=FastJSONResponse)
async def embeddings(
    body: InfinityEmbeddingRequest,
    request: Request,
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    if body.modality == "audio":
        raise UnsupportedInput("modality 'audio' is not supported by this server", param="modality")
    inputs = [body.input] if isinstance(body.input, str) else body.input
    images = body.modality == "image"  # data URLs or base64 (URLs where the server fetches them)
    query = EmbedQuery(model=body.model, inputs=[] if images else inputs, images=inputs if images else (),
                       dimensions=body.dimensions, image_param="modality")
    result = await cancellable(request, state.embeddings.embed(query, ctx))
    return FastJSONResponse(infinity_body(result, body.encoding_format, ctx))


@router.post("/rerank", response_model=InfinityRerankResponse, response_class=FastJSONResponse)
async def rerank(
    body: InfinityRerankRequest,
    request: Request,
    ctx: RequestContext = Depends(authenticated),
    state: AppState = Depends(app_state),
):
    query = RerankQuery(model=body.model, documents=body.documents, query=body.query)
    result = await cancellable(request, state.rerank.rerank(query, ctx))
    return FastJSONResponse(
        rerank_body(result, body.documents, body.top_n, body.return_documents, body.raw_scores, body.model)
    )


@router.get("/models", response_model=InfinityModelList, response_class=FastJSONResponse)
async def models(ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    return FastJSONResponse(infinity_models(state.pool, ctx.viewer))


health_router = APIRouter(route_class=dialect_route(INFINITY), tags=["Infinity"])


@health_router.get("/health")
async def infinity_health(state: AppState = Depends(app_state)):
    body = health(state.pool)
    return FastJSONResponse(body, status_code=200 if body["status"] == "ok" else 503)
