"""The deployment rows: a bring-up's status change does not overwrite a stop or delete that
another process made meanwhile."""

from __future__ import annotations

from inferd.accounts.db import Database
from inferd.accounts.models import Deployment, utcnow
from inferd.deployments.store import DeploymentStore


async def test_a_guarded_change_leaves_a_stopped_or_deleted_row_alone(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/inferd.db")
    await db.migrate()
    try:
        store = DeploymentStore(db)
        for deploy_id in ("a", "b"):
            await store.add(Deployment(deploy_id=deploy_id, account_id="acct", model_name="m", task="embeddings",
                                       backend="sentence-transformers", source="path:/x", config={},
                                       status="deploying", created_at=utcnow(), updated_at=utcnow()))
        assert await store.set("a", ("stopped", "deleted"), status="deployed")
        assert (await store.get("a")).status == "deployed"
        await store.set("b", status="stopped")  # another process stops it
        assert not await store.set("b", ("stopped", "deleted"), status="deployed")
        assert (await store.get("b")).status == "stopped"
        assert await store.set("b", status="initializing")  # a start is not guarded
    finally:
        await db.close()
