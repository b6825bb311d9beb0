"""Health, liveness, metrics and the API's own description.

``/health`` is readiness: 200 only when every model is ready, 503 (same body) while any loads,
failed or was lost, so a load balancer or an orchestrator's probe can tell. ``/livez`` answers
200 as long as the process serves HTTP. ``/metrics`` and the docs answer without a token unless
the operator asks otherwise (``metrics_auth``, ``docs_auth``: admin tokens only).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import Response

from inferd.api.deps import admin, admit
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import PLATFORM, dialect_route
from inferd.api.state import AppState, app_state
from inferd.observability.metrics import CONTENT_TYPE
from inferd.serving.models import health

router = APIRouter(tags=["System"])


@router.get("/health")
async def get_health(state: AppState = Depends(app_state)):
    """Readiness and each model's state (Infinity's `{"unix": ...}` included): 200 when every
    model is ready, 503 otherwise."""
    body = health(state.pool)
    return FastJSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


@router.get("/livez")
async def liveness():
    """200 while the process serves HTTP, whatever its models are doing."""
    return FastJSONResponse({"status": "alive"})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: AppState = Depends(app_state)):
    if state.settings.metrics_auth:
        await admit(request, needs_token=True, needs_admin=True)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


def add_guarded_docs(app: FastAPI) -> None:
    """The OpenAPI description and its viewers, for admin tokens only."""
    docs_router = APIRouter(route_class=dialect_route(PLATFORM), include_in_schema=False)

    @docs_router.get("/openapi.json")
    async def openapi(_=Depends(admin)):
        return FastJSONResponse(app.openapi())

    @docs_router.get("/docs")
    async def swagger(_=Depends(admin)):
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @docs_router.get("/redoc")
    async def redoc(_=Depends(admin)):
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    app.include_router(docs_router)
