"""Anthropic's Messages API, as DeepInfra serves it: POST /anthropic/v1/messages and
/anthropic/v1/messages/count_tokens (the `anthropic` SDK with base_url=<server>/anthropic)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from inferd.api.deps import authenticated
from inferd.api.disconnect import cancellable
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import ANTHROPIC, dialect_route
from inferd.api.state import AppState, app_state
from inferd.api.streaming import sse_response
from inferd.protocol.anthropic import CountTokensRequest, MessagesRequest
from inferd.serving.anthropic import count_tokens, message_events, message_response, start_messages
from inferd.serving.context import RequestContext

router = APIRouter(route_class=dialect_route(ANTHROPIC), tags=["Anthropic"])


@router.post("/v1/messages", response_class=FastJSONResponse)
async def messages(body: MessagesRequest, request: Request, ctx: RequestContext = Depends(authenticated),
                   state: AppState = Depends(app_state)):
    """A message from the model: text content blocks, stop_reason, usage; or its event stream."""
    run = await start_messages(state.generation, body, ctx)
    if body.stream:
        return await sse_response(request, message_events(run, body.model))
    return FastJSONResponse(await cancellable(request, message_response(run, body.model)))


@router.post("/v1/messages/count_tokens", response_class=FastJSONResponse)
async def messages_count_tokens(body: CountTokensRequest, ctx: RequestContext = Depends(authenticated),
                                state: AppState = Depends(app_state)):
    """How many input tokens the request's messages take."""
    return FastJSONResponse(await count_tokens(state.generation, body, ctx))
