"""DeepInfra's LoRA routes: ``POST /v1/lora/create``, ``GET/PATCH/DELETE /v1/lora/{name}``,
``GET /v1/lora/{name}/status``, ``GET /v1/model/{model}/loras``, ``GET /models/lora/list``
(who may see what: serving/adapters.py; how adapters are served: deployments/adapters.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from inferd.api.deps import authenticated
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import PLATFORM, dialect_route
from inferd.api.state import AppState, app_state
from inferd.protocol.deploy import LoraIn, LoraOut, LoraPatch
from inferd.serving.context import RequestContext

router = APIRouter(route_class=dialect_route(PLATFORM), tags=["LoRA adapters"])


@router.post("/v1/lora/create", response_model=LoraOut)
async def create_lora(body: LoraIn, ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """Make an adapter on a base model (vLLM with enable_lora) from a PEFT directory or the hub; it is
    called as `lora_name` or `BASE:LORA_NAME` once `deployed`."""
    return FastJSONResponse(await state.adapters.create(ctx, body))


@router.get("/models/lora/list", response_model=list[LoraOut])
async def list_loras(ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """The adapters the caller sees: its own and public ones."""
    return FastJSONResponse(state.adapters.list(ctx))


@router.get("/v1/model/{model:path}/loras", response_model=list[LoraOut])
async def model_loras(model: str, ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """The adapters of one base model that the caller sees."""
    return FastJSONResponse(state.adapters.list(ctx, model))


@router.get("/v1/lora/{name:path}/status")
async def lora_status(name: str, ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    return FastJSONResponse(state.adapters.status(ctx, name))


@router.get("/v1/lora/{name:path}", response_model=LoraOut)
async def get_lora(name: str, ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    return FastJSONResponse(state.adapters.get(ctx, name))


@router.patch("/v1/lora/{name:path}", response_model=LoraOut)
async def patch_lora(name: str, body: LoraPatch, ctx: RequestContext = Depends(authenticated),
                     state: AppState = Depends(app_state)):
    """Change an adapter's description, or (admins) whether it is private."""
    return FastJSONResponse(await state.adapters.patch(ctx, name, body))


@router.delete("/v1/lora/{name:path}", response_model=LoraOut)
async def delete_lora(name: str, ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """Unload and delete an adapter (its usage stays in the bill)."""
    return FastJSONResponse(await state.adapters.delete(ctx, name))
