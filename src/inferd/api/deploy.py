"""DeepInfra's deployment routes: ``POST /deploy/llm``, ``POST /deploy/hf/``, ``GET /deploy/list``,
``GET/PUT/DELETE /deploy/{deploy_id}``, ``POST /deploy/{deploy_id}/start|stop``,
``GET /deploy/{deploy_id}/stats`` (serving/deployments.py has who may see what)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from inferd.api.deps import authenticated
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import PLATFORM, dialect_route
from inferd.api.state import AppState, app_state
from inferd.protocol.deploy import DeployHFIn, DeployLLMIn, DeploymentOut, DeploymentUpdateIn
from inferd.serving.context import RequestContext

router = APIRouter(route_class=dialect_route(PLATFORM), tags=["Deployments"])
DeployId = Path(max_length=64, description="the deployment's id (POST /deploy/llm answers it)")


@router.post("/deploy/llm", response_model=DeploymentOut)
async def deploy_llm(body: DeployLLMIn, ctx: RequestContext = Depends(authenticated),
                     state: AppState = Depends(app_state)):
    """Deploy a text-generation model from a Hugging Face repository or an allowed local path; it loads
    in the background (`status` initializing -> deploying -> deployed, or failed with `fail_reason`)."""
    return FastJSONResponse(await state.deploys.create_llm(ctx, body))


@router.post("/deploy/hf/", response_model=DeploymentOut)
@router.post("/deploy/hf", response_model=DeploymentOut, include_in_schema=False)
async def deploy_hf(body: DeployHFIn, ctx: RequestContext = Depends(authenticated),
                    state: AppState = Depends(app_state)):
    """Deploy a model of another task (embeddings, reranker, speech recognition, images...)."""
    return FastJSONResponse(await state.deploys.create_hf(ctx, body))


@router.get("/deploy/list", response_model=list[DeploymentOut])
async def list_deployments(all: bool = Query(False, description="admin tokens: every account's"),  # noqa: A002
                           ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """The account's deployments (deleted ones are not listed)."""
    return FastJSONResponse(state.deploys.list(ctx, all))


@router.get("/deploy/{deploy_id}", response_model=DeploymentOut)
async def get_deployment(deploy_id: str = DeployId, ctx: RequestContext = Depends(authenticated),
                         state: AppState = Depends(app_state)):
    """One deployment: its status, `fail_reason`, and its `progress` while it comes up."""
    return FastJSONResponse(state.deploys.get(ctx, deploy_id))


@router.put("/deploy/{deploy_id}", response_model=DeploymentOut)
async def update_deployment(body: DeploymentUpdateIn, deploy_id: str = DeployId,
                            ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """Change a deployment's `settings` (min_instances, max_instances)."""
    return FastJSONResponse(await state.deploys.update(ctx, deploy_id, body))


@router.delete("/deploy/{deploy_id}", response_model=DeploymentOut)
async def delete_deployment(deploy_id: str = DeployId, ctx: RequestContext = Depends(authenticated),
                            state: AppState = Depends(app_state)):
    """Unload and delete a deployment (its usage stays in the bill)."""
    return FastJSONResponse(await state.deploys.delete(ctx, deploy_id))


@router.post("/deploy/{deploy_id}/stop", response_model=DeploymentOut)
async def stop_deployment(deploy_id: str = DeployId, ctx: RequestContext = Depends(authenticated),
                          state: AppState = Depends(app_state)):
    """Unload a deployment, keeping it (requests to it: 503 until it is started)."""
    return FastJSONResponse(await state.deploys.stop(ctx, deploy_id))


@router.post("/deploy/{deploy_id}/start", response_model=DeploymentOut)
async def start_deployment(deploy_id: str = DeployId, ctx: RequestContext = Depends(authenticated),
                           state: AppState = Depends(app_state)):
    """Load a stopped or failed deployment again."""
    return FastJSONResponse(await state.deploys.start(ctx, deploy_id))


@router.get("/deploy/{deploy_id}/stats")
async def deployment_stats(deploy_id: str = DeployId, ctx: RequestContext = Depends(authenticated),
                           state: AppState = Depends(app_state)):
    """What a deployment has served (requests, tokens, cost) and its engine's queue."""
    return FastJSONResponse(await state.deploys.stats(ctx, deploy_id))
