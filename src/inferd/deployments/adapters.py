"""LoRA adapters: made on a base model over the API, served as models of their own in the base
model's batches (engine/adapter.py), kept in the database and restored at start.

An adapter is a PEFT directory (``adapter_config.json`` + weights) from a path the admin allowed
or the hub. Its base must run on vLLM with ``enable_lora`` (the vLLM CPU build serves adapters;
the transformers runtime does not). Making one loads its weights into the base's engine at once,
so a bad adapter fails with vLLM's reason instead of failing requests later. Requests name it
as ``LORA_NAME`` or ``BASE:LORA_NAME``; it costs what its base costs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from inferd.accounts.db import Database
from inferd.accounts.models import LoraAdapter, utcnow
from inferd.catalog import EVERYONE, Catalog, ModelRef, ModelSpec, Viewer, VersionSpec
from inferd.catalog.sources import SourceError
from inferd.deployments.manager import cancel, download_cap, fetch, weights_source
from inferd.engine.adapter import AdapterEngine
from inferd.engine.base import EngineState
from inferd.engine.generation import Adapter
from inferd.engine.pool import ModelPool
from inferd.errors import Conflict, Forbidden, InferdError, InvalidRequest, NotFound
from inferd.protocol.deploy import LoraIn, LoraPatch
from inferd.settings import Settings

log = logging.getLogger(__name__)
READY_WAIT_S = 600.0  # an adapter restored at start waits this long for its base to come up


class Adapters:
    def __init__(self, db: Database, catalog: Catalog, pool: ModelPool, settings: Settings):
        self._db = db
        self.catalog = catalog
        self.pool = pool
        self.settings = settings
        self._rows: dict[str, LoraAdapter] = {}  # lora name -> row (live ones)
        self._tasks: dict[str, asyncio.Task] = {}
        self._changing = asyncio.Lock()  # the API's changes and sync() one at a time

    async def restore(self) -> None:
        for row in await self._live():
            self._adopt(row)

    async def _live(self) -> list[LoraAdapter]:
        async with self._db.sessions() as session:
            return list(await session.scalars(select(LoraAdapter).where(LoraAdapter.status != "deleted")
                                              .order_by(LoraAdapter.id)))

    def _adopt(self, row: LoraAdapter) -> None:
        """An adapter this process did not make (a restart, another process): loaded into its base here."""
        self._rows[row.lora_name] = row
        self._install(row)
        if row.status == "failed":
            self.pool.hold(self._ref(row), row.fail_reason or "it failed", EngineState.FAILED)
        else:
            self._launch(row, None)

    async def sync(self) -> None:
        """Follow what other processes on this database did (as ``Deployments.sync``, after it: an
        adapter's base may be a deployment): an adapter made there is loaded into its base here, one
        deleted there is unloaded here, a changed description or privacy is taken over."""
        async with self._changing:
            live = {row.lora_name: row for row in await self._live()}
            for name, mine in list(self._rows.items()):
                theirs = live.get(name)
                if theirs is None or theirs.id != mine.id:  # deleted there (and maybe made again)
                    await self._unload(mine)
                    log.info("adapter %s was deleted by another process", name)
                elif theirs.config != mine.config:
                    mine.config = theirs.config
                    self._install(mine)
            for name, row in live.items():
                if name not in self._rows:
                    self._adopt(row)
                    log.info("adapter %s was made by another process; it is loaded here too", name)

    async def close(self) -> None:
        await asyncio.gather(*(cancel(task) for task in list(self._tasks.values())))

    # --- the API

    async def create(self, account: str, admin: bool, body: LoraIn) -> LoraAdapter:
        if not body.private and not admin:
            raise Forbidden("Only admins make public adapters (`private: false`)")
        async with self._changing:
            return await self._create(account, admin, body)

    async def _create(self, account: str, admin: bool, body: LoraIn) -> LoraAdapter:
        name = body.lora_name
        if (name in self._rows or name in self.catalog or self.catalog.is_alias(name) or name.startswith("deploy/")
                or await self._taken(name)):
            raise Conflict(f"The name {name!r} is taken; choose another")
        base = self.catalog.resolve(body.base_model, viewer=Viewer(account, admin))
        if base.spec.options.get("lora_base"):
            raise InvalidRequest("An adapter's base is a model, not another adapter", param="base_model")
        if not (base.spec.backend == "vllm" and base.spec.options.get("enable_lora")):
            raise Conflict(f"Model {base.spec.id} takes no adapters: adapters run on a base model served by vLLM "
                           "with `enable_lora` (a catalog option, or extra_args.enable_lora of POST /deploy/llm)")
        source, local = weights_source(self.settings, body.hf, body.path)
        config = {"private": body.private, "description": body.description, "base_key": base.key}
        if local is not None:
            config.update(_adapter_config(local, base))
        row = LoraAdapter(lora_id="lora_" + secrets.token_hex(6), lora_name=name, account_id=account,
                          base_model=base.spec.id, source=source, config=config, status="deploying",
                          created_at=utcnow(), updated_at=utcnow())
        async with self._db.sessions.begin() as session:
            session.add(row)
        self._rows[name] = row
        self._install(row)
        self._launch(row, body.hf.token if body.hf is not None else None)
        return row

    async def _taken(self, name: str) -> bool:
        """Whether another process made a live adapter of this name (not followed here yet)."""
        async with self._db.sessions() as session:
            return await session.scalar(select(LoraAdapter.id).where(LoraAdapter.lora_name == name,
                                                                     LoraAdapter.status != "deleted")) is not None

    def _launch(self, row: LoraAdapter, token: str | None) -> None:
        self.pool.hold(self._ref(row), "the adapter is loading; retry shortly", EngineState.LOADING)
        self._tasks[row.lora_name] = asyncio.create_task(self._bring_up(row, token), name=f"lora:{row.lora_name}")

    async def _bring_up(self, row: LoraAdapter, token: str | None) -> None:
        try:
            try:
                path = await asyncio.to_thread(fetch, row.source, token, download_cap(self.settings))
                if "rank" not in row.config:  # a local adapter was read when it was made
                    base = self.catalog.resolve(row.base_model, viewer=EVERYONE)
                    row.config = {**row.config, **await asyncio.to_thread(_adapter_config, path, base)}
            except (SourceError, InferdError) as exc:
                return await self._set(row, "failed", getattr(exc, "message", str(exc)))
            adapter = Adapter(row.lora_name, row.id, str(path))
            engine = AdapterEngine(self._ref(row), adapter, row.config["base_key"], self.pool.find)
            base_engine = await self._base_ready(row)
            if base_engine is None:
                return await self._set(row, "failed", f"its base model {row.base_model} is not serving")
            try:
                await base_engine.add_adapter(adapter)
            except InferdError as exc:
                return await self._set(row, "failed", exc.message)
            self.pool.put(self._ref(row), engine)
            await self._set(row, "deployed", None)
            log.info("adapter %s is served on %s", row.lora_name, row.base_model)
        finally:
            if self._tasks.get(row.lora_name) is asyncio.current_task():
                del self._tasks[row.lora_name]

    async def _base_ready(self, row: LoraAdapter):
        deadline = asyncio.get_running_loop().time() + READY_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            engine = self.pool.find(row.config["base_key"])
            if engine is not None and engine.state is EngineState.READY:
                # (vLLM here, or in Ray Serve replicas: cluster/remote.py; an engine without
                # adapters cannot serve one)
                return engine if hasattr(engine, "add_adapter") else None
            if engine is None or engine.state in (EngineState.FAILED, EngineState.STOPPED):
                return None
            await asyncio.sleep(0.5)
        return None

    async def _set(self, row: LoraAdapter, status: str, reason: str | None, **fields: Any) -> None:
        if status == "failed":
            log.error("adapter %s failed: %s", row.lora_name, reason)
            self.pool.hold(self._ref(row), reason or "it failed", EngineState.FAILED)
        values = {"status": status, "fail_reason": reason[:2000] if reason else None, "updated_at": utcnow(),
                  "config": row.config, **fields}
        if status == "deleted":
            values["deleted_at"] = values["updated_at"]
        async with self._db.sessions.begin() as session:
            # a deleted row stays deleted (another process's bring-up must not bring it back)
            await session.execute(update(LoraAdapter).where(LoraAdapter.id == row.id, LoraAdapter.status != "deleted")
                                  .values(**values))
        for key, value in values.items():
            setattr(row, key, value)

    def owned(self, name: str, account: str, admin: bool) -> LoraAdapter:
        row = self._rows.get(name) if len(name) <= 200 else None
        if row is None or not Viewer(account, admin).sees(self._spec(row)):
            raise NotFound(f"No LoRA adapter {name[:200]!r}")
        return row

    def mine(self, name: str, account: str, admin: bool) -> LoraAdapter:
        row = self.owned(name, account, admin)
        if not (admin or row.account_id == account):
            raise Forbidden("This adapter belongs to another account")
        return row

    def list(self, viewer: Viewer, base_model: str | None = None) -> list[LoraAdapter]:
        return [row for row in self._rows.values() if viewer.sees(self._spec(row))
                and (base_model is None or row.base_model == base_model)]

    async def patch(self, row: LoraAdapter, admin: bool, body: LoraPatch) -> LoraAdapter:
        config = dict(row.config)
        if body.description is not None:
            config["description"] = body.description
        if body.private is not None:
            if not body.private and not admin:
                raise Forbidden("Only admins make adapters public")
            config["private"] = body.private
        async with self._changing:
            row.config = config
            await self._set(row, row.status, row.fail_reason)
            self._install(row)
        return row

    async def delete(self, row: LoraAdapter) -> LoraAdapter:
        async with self._changing:
            if self._rows.get(row.lora_name) is not row:  # gone meanwhile (another process deleted it)
                raise NotFound(f"No LoRA adapter {row.lora_name!r}")
            await self._unload(row)
            await self._set(row, "deleted", None)
        return row

    async def _unload(self, row: LoraAdapter) -> None:
        """Out of this process: its catalog entry first (no request finds it from here on), its
        engine, its weights in its base's engine."""
        await cancel(self._tasks.pop(row.lora_name, None))
        ref = self._ref(row)
        del self._rows[row.lora_name]
        self.catalog.uninstall(row.lora_name)
        engine = self.pool.find(ref.key)
        await self.pool.remove(ref.key)
        if isinstance(engine, AdapterEngine):
            base = self.pool.find(row.config["base_key"])
            if base is not None and base.state is EngineState.READY and hasattr(base, "remove_adapter"):
                await base.remove_adapter(engine.adapter)

    # --- the catalog entry

    def _spec(self, row: LoraAdapter) -> ModelSpec:
        base = self.catalog.resolve(row.base_model, viewer=EVERYONE).spec if row.base_model in self.catalog else None
        return ModelSpec(
            id=row.lora_name, task="text-generation", backend="vllm",
            versions=(VersionSpec(name=row.lora_id, source=row.source),),
            options={"lora_base": row.base_model}, pricing=base.pricing if base else None,
            limits=base.limits if base else {}, owned_by=row.account_id, owner=row.account_id,
            private=bool(row.config.get("private", True)), description=row.config.get("description", ""),
            tags=("lora",),
        )

    def _ref(self, row: LoraAdapter) -> ModelRef:
        spec = self._spec(row)
        return ModelRef(spec, spec.versions[0])

    def _install(self, row: LoraAdapter) -> None:
        self.catalog.install(self._spec(row))


def _adapter_config(path: Path, base: ModelRef) -> dict:
    """What the adapter's ``adapter_config.json`` says, checked against its base; 400 for what
    cannot be served."""
    config_file = (path if path.is_dir() else path.parent) / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        raise InvalidRequest("The adapter has no readable adapter_config.json (PEFT's format)", param="path") \
            from None
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise InvalidRequest(f"The adapter is {config.get('peft_type')}, not LoRA", param="path")
    rank = int(config.get("r") or 0)
    most = int(base.spec.options.get("max_lora_rank", 16))
    if not 0 < rank <= most:
        raise InvalidRequest(f"The adapter's rank is {rank}; {base.spec.id} takes ranks up to {most} "
                             "(its option max_lora_rank)", param="path")
    modules = config.get("target_modules")
    return {"rank": rank, "alpha": config.get("lora_alpha"),
            "target_modules": sorted(modules) if isinstance(modules, list) else modules}
