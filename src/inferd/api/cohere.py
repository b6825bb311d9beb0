"""Cohere's rerank API at the server root: POST /v1/rerank and /v2/rerank (the cohere SDK's
``Client`` and ``ClientV2`` pointed at inferd)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from inferd.api.deps import authenticated
from inferd.api.disconnect import cancellable
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import COHERE, dialect_route
from inferd.api.state import AppState, app_state
from inferd.protocol.cohere import CohereRerankRequest, CohereRerankResponse
from inferd.serving.context import RequestContext
from inferd.serving.rerank import RerankQuery, cohere_body

router = APIRouter(route_class=dialect_route(COHERE), tags=["Cohere"])


async def _rerank(body: CohereRerankRequest, request: Request, ctx: RequestContext, state: AppState, version: int):
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    query = RerankQuery(model=body.model, documents=texts, query=body.query,
                        max_tokens_per_doc=body.max_tokens_per_doc if version == 2 else None)
    result = await cancellable(request, state.rerank.rerank(query, ctx))
    return FastJSONResponse(cohere_body(result, texts, body.top_n, body.return_documents, version))


@router.post("/v1/rerank", response_model=CohereRerankResponse, response_class=FastJSONResponse)
async def rerank_v1(body: CohereRerankRequest, request: Request, ctx: RequestContext = Depends(authenticated),
                    state: AppState = Depends(app_state)):
    """Cohere v1 rerank: results sorted by relevance, cut to top_n, documents echoed on request."""
    return await _rerank(body, request, ctx, state, 1)


@router.post("/v2/rerank", response_model=CohereRerankResponse, response_class=FastJSONResponse)
async def rerank_v2(body: CohereRerankRequest, request: Request, ctx: RequestContext = Depends(authenticated),
                    state: AppState = Depends(app_state)):
    """Cohere v2 rerank: results sorted by relevance, cut to top_n; max_tokens_per_doc cuts documents."""
    return await _rerank(body, request, ctx, state, 2)
