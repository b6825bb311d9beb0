"""Deployments on the wire: DeepInfra's ``DeploymentOut``, and who may see and change which.

An account sees and changes its own deployments; an admin token sees every account's (and may
deploy public models). A scoped token calls models and manages nothing. Another account's
deployment answers 404, as one that does not exist.
"""

from __future__ import annotations

from inferd.accounts.models import Deployment, aware
from inferd.accounts.usage import UsageRecorder
from inferd.catalog.pricing import nano_to_usd
from inferd.deployments.manager import Deployments
from inferd.engine.base import EngineState
from inferd.protocol.deploy import DeployHFIn, DeployLLMIn, DeploymentUpdateIn
from inferd.serving.context import RequestContext
from inferd.serving.tenancy import caller, unscoped


class DeploymentService:
    def __init__(self, deployments: Deployments, usage: UsageRecorder):
        self.deployments = deployments
        self.usage = usage

    def _caller(self, ctx: RequestContext) -> tuple[str, bool]:
        unscoped(ctx)
        return caller(ctx)

    def _owned(self, ctx: RequestContext, deploy_id: str) -> Deployment:
        return self.deployments.owned(deploy_id, *self._caller(ctx))

    async def create_llm(self, ctx: RequestContext, body: DeployLLMIn) -> dict:
        return self.out(await self.deployments.create_llm(*self._caller(ctx), body))

    async def create_hf(self, ctx: RequestContext, body: DeployHFIn) -> dict:
        return self.out(await self.deployments.create_hf(*self._caller(ctx), body))

    def list(self, ctx: RequestContext, everyone: bool) -> list[dict]:
        account, admin = self._caller(ctx)
        return [self.out(row) for row in self.deployments.list(None if admin and everyone else account)]

    def get(self, ctx: RequestContext, deploy_id: str) -> dict:
        return self.out(self._owned(ctx, deploy_id))

    async def update(self, ctx: RequestContext, deploy_id: str, body: DeploymentUpdateIn) -> dict:
        return self.out(await self.deployments.update(self._owned(ctx, deploy_id), body.settings))

    async def stop(self, ctx: RequestContext, deploy_id: str) -> dict:
        return self.out(await self.deployments.stop(self._owned(ctx, deploy_id)))

    async def start(self, ctx: RequestContext, deploy_id: str) -> dict:
        return self.out(await self.deployments.start(self._owned(ctx, deploy_id)))

    async def delete(self, ctx: RequestContext, deploy_id: str) -> dict:
        return self.out(await self.deployments.delete(self._owned(ctx, deploy_id)))

    async def stats(self, ctx: RequestContext, deploy_id: str) -> dict:
        row = self._owned(ctx, deploy_id)
        await self.usage.flush()  # this process's requests just answered are counted
        served = await self.deployments.store.usage(row.model_name, row.deploy_id)
        engine = self.deployments.engine(row)
        return {
            "deploy_id": row.deploy_id,
            "status": row.status,
            **served,
            "cost": nano_to_usd(served["cost_nano_usd"]),
            "engine": engine.stats() if engine is not None else None,
        }

    def out(self, row: Deployment) -> dict:
        config = row.config
        scaling = config.get("scaling", {})
        engine = self.deployments.engine(row)
        running = int(engine is not None and engine.state is EngineState.READY and row.status == "deployed")
        pending = int(row.status in ("initializing", "deploying"))
        return {
            "deploy_id": row.deploy_id,
            "model_name": row.model_name,
            "version": row.deploy_id,
            "task": row.task,
            "status": row.status,
            "fail_reason": row.fail_reason,
            "created_at": int(aware(row.created_at).timestamp()),
            "updated_at": int(aware(row.updated_at).timestamp()),
            "instances": {"running": running, "pending": pending},
            "config": {"backend": row.backend, "source": row.source, "limits": config.get("limits", {}),
                       "options": config.get("options", {}), "num_gpus": scaling.get("num_gpus", 0),
                       **({"gpu": config["gpu"]} if config.get("gpu") else {})},
            "settings": {"min_instances": scaling.get("min_instances", 1),
                         "max_instances": scaling.get("max_instances", 1)},
            "progress": self.deployments.progress(row),
            "owner": row.account_id,
            "private": bool(config.get("private", True)),
        }
