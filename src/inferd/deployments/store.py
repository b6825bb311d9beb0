"""Deployment rows in the database: what was deployed, by whom, and how it stands.

A deleted deployment keeps its row (``status`` deleted, ``deleted_at``): its usage rows name it.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import func, select, update

from inferd.accounts.db import Database
from inferd.accounts.models import Deployment, UsageRecord, utcnow

LIVE = ("initializing", "deploying", "deployed", "failed", "stopped")  # every status but deleted


def new_deploy_id() -> str:
    return secrets.token_hex(8)


class DeploymentStore:
    def __init__(self, db: Database):
        self._db = db

    async def add(self, row: Deployment) -> Deployment:
        async with self._db.sessions.begin() as session:
            session.add(row)
        return row

    async def get(self, deploy_id: str) -> Deployment | None:
        async with self._db.sessions() as session:
            return await session.scalar(select(Deployment).where(Deployment.deploy_id == deploy_id))

    async def list(self, account_id: str | None = None, include_deleted: bool = False) -> list[Deployment]:
        """Deployments, oldest first: one account's, or (``account_id`` None) everyone's."""
        query = select(Deployment).order_by(Deployment.id)
        if account_id is not None:
            query = query.where(Deployment.account_id == account_id)
        if not include_deleted:
            query = query.where(Deployment.status.in_(LIVE))
        async with self._db.sessions() as session:
            return list(await session.scalars(query))

    async def of_model(self, model_name: str) -> list[Deployment]:
        """The live versions of one model name, oldest first."""
        query = (select(Deployment).where(Deployment.model_name == model_name, Deployment.status.in_(LIVE))
                 .order_by(Deployment.id))
        async with self._db.sessions() as session:
            return list(await session.scalars(query))

    async def count_live(self, account_id: str) -> int:
        query = select(func.count()).where(Deployment.account_id == account_id, Deployment.status.in_(LIVE))
        async with self._db.sessions() as session:
            return int(await session.scalar(query) or 0)

    async def set(self, deploy_id: str, unless: tuple[str, ...] = (), **fields: Any) -> bool:
        """Change a row; not where its status is one of ``unless`` (False then: another process
        stopped or deleted it meanwhile)."""
        fields["updated_at"] = utcnow()
        if fields.get("status") == "deleted":
            fields["deleted_at"] = fields["updated_at"]
        query = update(Deployment).where(Deployment.deploy_id == deploy_id)
        if unless:
            query = query.where(Deployment.status.not_in(unless))
        async with self._db.sessions.begin() as session:
            return (await session.execute(query.values(**fields))).rowcount > 0

    async def usage(self, model: str, version: str) -> dict[str, int]:
        """What a deployment has served: requests (by status), tokens and cost, from the usage rows."""
        query = (select(UsageRecord.status, func.count(), func.sum(UsageRecord.input_tokens),
                        func.sum(UsageRecord.output_tokens), func.sum(UsageRecord.cost_nano_usd))
                 .where(UsageRecord.model == model, UsageRecord.version == version).group_by(UsageRecord.status))
        out = {"requests": 0, "succeeded": 0, "failed": 0, "input_tokens": 0, "output_tokens": 0,
               "cost_nano_usd": 0}
        async with self._db.sessions() as session:
            for status, n, inputs, outputs, cost in await session.execute(query):
                out["requests"] += n
                out["succeeded" if status == "succeeded" else "failed"] += n
                out["input_tokens"] += int(inputs or 0)
                out["output_tokens"] += int(outputs or 0)
                out["cost_nano_usd"] += int(cost or 0)
        return out
