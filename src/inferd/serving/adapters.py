"""LoRA adapters on the wire, and who may see and change which: an account its own (and public
ones: seen, not changed), admins every one; another account's private adapter answers 404."""

from __future__ import annotations

from inferd.accounts.models import LoraAdapter, aware
from inferd.catalog import Viewer
from inferd.deployments.adapters import Adapters
from inferd.protocol.deploy import LoraIn, LoraPatch
from inferd.serving.context import RequestContext
from inferd.serving.tenancy import caller, unscoped


class AdapterService:
    def __init__(self, adapters: Adapters):
        self.adapters = adapters

    def _caller(self, ctx: RequestContext) -> tuple[str, bool]:
        unscoped(ctx)
        return caller(ctx)

    async def create(self, ctx: RequestContext, body: LoraIn) -> dict:
        return out(await self.adapters.create(*self._caller(ctx), body))

    def get(self, ctx: RequestContext, name: str) -> dict:
        return out(self.adapters.owned(name, *self._caller(ctx)))

    def status(self, ctx: RequestContext, name: str) -> dict:
        row = self.adapters.owned(name, *self._caller(ctx))
        return {"lora_name": row.lora_name, "status": row.status, "fail_reason": row.fail_reason}

    async def patch(self, ctx: RequestContext, name: str, body: LoraPatch) -> dict:
        account, admin = self._caller(ctx)
        return out(await self.adapters.patch(self.adapters.mine(name, account, admin), admin, body))

    async def delete(self, ctx: RequestContext, name: str) -> dict:
        return out(await self.adapters.delete(self.adapters.mine(name, *self._caller(ctx))))

    def list(self, ctx: RequestContext, base_model: str | None = None) -> list[dict]:
        account, admin = caller(ctx)
        viewer = Viewer(account, admin)
        if base_model is not None:  # by id or alias: 404 for a model the caller cannot see
            base_model = self.adapters.catalog.resolve(base_model, viewer=viewer).spec.id
        return [out(row) for row in self.adapters.list(viewer, base_model)]


def out(row: LoraAdapter) -> dict:
    return {
        "lora_id": row.lora_id,
        "lora_name": row.lora_name,
        "base_model": row.base_model,
        "status": row.status,
        "fail_reason": row.fail_reason,
        "created_at": int(aware(row.created_at).timestamp()),
        "updated_at": int(aware(row.updated_at).timestamp()),
        "rank": row.config.get("rank"),
        "owner": row.account_id,
        "private": bool(row.config.get("private", True)),
        "description": row.config.get("description", ""),
    }
