"""Health and metrics; no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from inferd.api.responses import FastJSONResponse
from inferd.api.state import AppState, app_state
from inferd.observability.metrics import CONTENT_TYPE
from inferd.serving.models import health

router = APIRouter(tags=["System"])


@router.get("/health")
async def get_health(state: AppState = Depends(app_state)):
    """Liveness and each model's state; Infinity's `{"unix": ...}` included."""
    return FastJSONResponse(health(state.pool))


@router.get("/metrics", include_in_schema=False)
async def metrics(state: AppState = Depends(app_state)):
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
