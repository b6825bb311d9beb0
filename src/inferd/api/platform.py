"""DeepInfra's platform routes at the server root: the model API (serving/model_api.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from inferd.api.deps import authenticated
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import PLATFORM, dialect_route
from inferd.api.state import AppState, app_state
from inferd.serving.context import RequestContext
from inferd.serving.model_api import model_detail, model_list, model_schema

router = APIRouter(route_class=dialect_route(PLATFORM), tags=["Models"])


@router.get("/models/list", response_class=FastJSONResponse)
async def list_models(ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """Every model the catalog serves (and the caller's deployments): task, pricing, context, tags, versions
    and load status."""
    return FastJSONResponse(model_list(state.pool, ctx.viewer))


@router.get("/models/{name:path}/schema/{variant}", response_class=FastJSONResponse)
async def get_model_schema(name: str, variant: str, ctx: RequestContext = Depends(authenticated),
                           state: AppState = Depends(app_state)):
    """The request (`in_schema`) and response (`out_schema`) JSON schemas of one of the model's variants."""
    return FastJSONResponse(model_schema(state.pool, name, variant, ctx.viewer))


@router.get("/models/{name:path}", response_class=FastJSONResponse)
async def get_model(name: str, ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """One model (by id or alias), with its native route's `in_schema` and `out_schema`."""
    return FastJSONResponse(model_detail(state.pool, name, ctx.viewer))
