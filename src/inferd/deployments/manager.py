"""Deployments: models accounts add, stop, start and delete while the server serves the rest.

A deployment is one version of a model name (its ``deploy_id`` is the version's name, so
``MODEL:ID``, ``deploy_id:ID`` and ``/v1/inference/deploy/ID`` all reach it). Its life:

    initializing -> deploying -> deployed          (POST /deploy/llm, /deploy/hf/; start)
                             \\-> failed + reason   (a missing path, an unreachable hub, a model
                                                    that does not fit, weights that do not load)
    deployed|failed|deploying -> stopped -> initializing ...   (stop, start)
    any -> deleted                                  (DELETE: the row stays for the bill)

The row is in the database (so a restart brings every deployment back, and ``inferd deploy``
sees it); the catalog and the pool of this process hold its version and engine. While a
version comes up, requests to it get 503 with ``Retry-After``; the model's default version is
its newest deployed one, so a new version takes over only once it answers, and an older one
keeps answering ``MODEL:VERSION`` until it is deleted. Memory is estimated before anything
loads (``fit.py``): a deployment that would not fit is refused (409) or fails with the sums.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from inferd.accounts.models import Deployment, aware, utcnow
from inferd.catalog import Catalog, Limits, ModelRef, ModelSpec, Scaling, Task, VersionSpec
from inferd.catalog.sources import SourceError, resolve_source
from inferd.deployments import fit
from inferd.deployments.download import Download
from inferd.deployments.store import DeploymentStore, new_deploy_id
from inferd.engine.base import Engine, EngineState
from inferd.engine.pool import ModelPool, Unloadable
from inferd.errors import Conflict, Forbidden, InvalidRequest, NotFound
from inferd.protocol.deploy import HF_BACKENDS, DeployHFIn, DeployLLMIn, DeploySettings
from inferd.settings import Settings

log = logging.getLogger(__name__)


class Deployments:
    def __init__(self, store: DeploymentStore, catalog: Catalog, pool: ModelPool, settings: Settings):
        self.store = store
        self.catalog = catalog
        self.pool = pool
        self.settings = settings
        self._rows: dict[str, Deployment] = {}  # this process's live deployments
        self._tasks: dict[str, asyncio.Task] = {}  # deploy id -> its bring-up
        self._progress: dict[str, dict[str, Any]] = {}
        self._downloads: dict[str, Download] = {}  # deploy id -> its hub download's bars (as _progress)
        self._estimates: dict[str, int] = {}  # deploy id -> bytes it holds or is about to
        self._fit_lock = asyncio.Lock()
        self._changing = asyncio.Lock()  # the API's changes and sync() one at a time
        self._follower: asyncio.Task | None = None

    # --- start and stop with the server

    async def restore(self) -> None:
        """Bring back every deployment the database has (a restart, or another process's)."""
        for row in await self.store.list():
            self._rows[row.deploy_id] = row
        for name in {row.model_name for row in self._rows.values()}:
            self._install(name)
        for row in list(self._rows.values()):
            self._adopt(row)
        if self._rows:
            log.info("%d deployments restored", len(self._rows))

    def _adopt(self, row: Deployment) -> None:
        """A row this process did not make (a restart, another process): held as it stands, or brought up."""
        ref = self._ref(row)
        if row.status == "stopped":
            self.pool.hold(ref, _STOPPED)
        elif row.status == "failed":
            self.pool.hold(ref, row.fail_reason or "it failed", EngineState.FAILED)
        else:
            self._launch(row)

    async def close(self) -> None:
        await cancel(self._follower)
        await asyncio.gather(*(cancel(task) for task in list(self._tasks.values())))

    def follow(self, interval_s: float, *after: Callable[[], Awaitable[None]]) -> None:
        """``sync()`` every ``interval_s`` seconds, while the server runs (0: never), and then each
        of ``after`` (the LoRA adapters' sync: their bases may be deployments)."""
        if interval_s > 0:
            self._follower = asyncio.create_task(self._follow(interval_s, (self.sync, *after)),
                                                 name="deployments:follow")

    async def _follow(self, interval_s: float, syncs: tuple[Callable[[], Awaitable[None]], ...]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            for sync in syncs:
                try:
                    await sync()
                except Exception:  # noqa: BLE001 - the database is away a moment: the next round tries again
                    log.exception("following the database (%s) failed", getattr(sync, "__qualname__", sync))

    async def sync(self) -> None:
        """Follow what other processes on this database did (several ``inferd serve`` processes,
        ingress replicas): a deployment made there comes up here too, one stopped, started, changed
        or deleted there is stopped, started, changed or dropped here. Each process loads its own
        engine and writes the shared status as its bring-up goes (as at start, ``restore()``); this
        process's own changes are already in its rows and are not done twice."""
        async with self._changing:
            live = {row.deploy_id: row for row in await self.store.list()}
            names: set[str] = set()
            for deploy_id, mine in list(self._rows.items()):
                theirs = live.get(deploy_id)
                if theirs is None:  # deleted there
                    del self._rows[deploy_id]
                    self._install(mine.model_name)
                    await self._halt(mine)
                    log.info("deployment %s (%s) was deleted by another process", deploy_id, mine.model_name)
                    continue
                if theirs.config != mine.config:
                    mine.config = theirs.config
                    names.add(mine.model_name)
                if theirs.status == "stopped" and mine.status != "stopped":
                    await self._halt(mine, Unloadable(self._ref(mine), _STOPPED, EngineState.STOPPED))
                    mine.status = "stopped"
                    names.add(mine.model_name)
                    log.info("deployment %s (%s) was stopped by another process", deploy_id, mine.model_name)
                elif (theirs.status in ("initializing", "deploying", "deployed")
                      and mine.status in ("stopped", "failed") and aware(theirs.updated_at) > aware(mine.updated_at)):
                    # started there after it ended here (maybe up there already: a small model is
                    # deployed within one of these rounds)
                    mine.status, mine.fail_reason, mine.updated_at = "initializing", None, theirs.updated_at
                    self._launch(mine)
                    log.info("deployment %s (%s) was started by another process", deploy_id, mine.model_name)
            adopted = [row for deploy_id, row in live.items() if deploy_id not in self._rows]
            for row in adopted:
                self._rows[row.deploy_id] = row
                names.add(row.model_name)
            for name in names:
                self._install(name)
            for row in adopted:
                self._adopt(row)
                log.info("deployment %s (%s) was made by another process; it comes up here too", row.deploy_id,
                         row.model_name)

    # --- the API

    async def create_llm(self, account: str, admin: bool, body: DeployLLMIn) -> Deployment:
        if body.base_model:
            raise InvalidRequest("`base_model` is not taken here: LoRA adapters are made with POST /v1/lora/create",
                                 param="base_model")
        extra = body.extra_args
        backend = (extra.backend if extra else None) or self.settings.deploy_llm_backend
        options: dict[str, Any] = {}
        if extra is not None:
            options.update({k: v for k, v in (("dtype", extra.dtype), ("kv_cache_gib", extra.kv_cache_gib),
                                              ("max_lora_rank", extra.max_lora_rank)) if v is not None})
            if extra.enable_lora:
                if backend != "vllm":
                    raise InvalidRequest("LoRA adapters are served on vLLM only", param="extra_args")
                options["enable_lora"] = True
        limits = {"max_batch_size": body.max_batch_size or 32, "queue_size": 1024,
                  "context_length": extra.context_length if extra else None}
        return await self._create(account, admin, body.model_name, Task.TEXT_GENERATION, backend, body.hf, body.path,
                                  limits, options, body.settings, body.num_gpus, body.private, body.description,
                                  {"gpu": body.gpu})

    async def create_hf(self, account: str, admin: bool, body: DeployHFIn) -> Deployment:
        allowed = HF_BACKENDS.get(body.task)
        if allowed is None:
            raise InvalidRequest(f"task {body.task.value} cannot be deployed here (deployable: "
                                 f"{', '.join(t.value for t in HF_BACKENDS)})", param="task")
        backend = body.backend or allowed[0]
        if backend not in allowed:
            raise InvalidRequest(f"backend {backend[:64]!r} does not serve {body.task.value}; one of: "
                                 f"{', '.join(allowed)}", param="backend")
        limits = {"max_batch_size": body.max_batch_size or 32, "context_length": body.context_length}
        return await self._create(account, admin, body.model_name, body.task, backend, body.hf, body.path, limits,
                                  {}, body.settings, body.num_gpus, body.private, body.description, {})

    async def _create(self, account: str, admin: bool, name: str, task: Task, backend: str, hf, path: str | None,
                      limits: dict, options: dict, settings: DeploySettings, num_gpus: int | None, private: bool,
                      description: str, shown: dict) -> Deployment:
        if not private and not admin:
            raise Forbidden("Only admins deploy public models (`private: false`)")
        _check_bounds(settings)
        await self._check_name(name, task, account)
        if await self.store.count_live(account) >= self.settings.max_deployments_per_account:
            raise Conflict(f"This account has {self.settings.max_deployments_per_account} deployments, the most "
                           "this server allows (max_deployments_per_account); delete one first")
        source, local = weights_source(self.settings, hf, path)
        # never code from the weights' repository; vLLM up in seconds, not minutes of compiling
        options = {"trust_remote_code": False, **({"enforce_eager": True} if backend == "vllm" else {}), **options}
        limits = {k: v for k, v in limits.items() if v is not None}
        scaling = {"min_instances": settings.min_instances, "max_instances": settings.max_instances,
                   **({"num_gpus": float(num_gpus)} if num_gpus else {})}
        Limits(**limits), Scaling(**scaling)  # noqa: B018 - their own checks, before anything is stored
        row = Deployment(
            deploy_id=new_deploy_id(), account_id=account, model_name=name, task=task.value, backend=backend,
            source=source, status="initializing", created_at=utcnow(), updated_at=utcnow(),
            config={"limits": limits, "scaling": scaling, "options": options, "private": private,
                    "description": description, **{k: v for k, v in shown.items() if v is not None}},
        )
        if local is not None:  # the weights are here: refuse now what cannot fit (409)
            async with self._fit_lock:
                self._estimates[row.deploy_id] = await asyncio.to_thread(self._estimate, row, local)
        async with self._changing:
            await self.store.add(row)
            self._rows[row.deploy_id] = row
            self._install(name)
            self._launch(row, token=hf.token if hf is not None else None)
        log.info("deployment %s: %s (%s, %s) from %s, for %s", row.deploy_id, name, task.value, backend, source,
                 account)
        return row

    async def _check_name(self, name: str, task: Task, account: str) -> None:
        if name.startswith("deploy/"):
            raise InvalidRequest("A model name cannot start with `deploy/` (that names a deployment by its id)",
                                 param="model_name")
        owners = {row.account_id for row in await self.store.of_model(name)}
        if owners - {account}:
            raise Conflict(f"The model name {name!r} is taken; choose another")
        if not owners and (name in self.catalog or self.catalog.is_alias(name)):
            raise Conflict(f"The model name {name!r} is one of this server's models; choose another")
        for row in self._rows.values():
            if row.model_name == name and row.task != task.value:
                raise Conflict(f"{name!r} is a {row.task} model; a new version must be one too")

    def _estimate(self, row: Deployment, path: Path) -> int:
        limits = row.config["limits"]
        estimate = fit.estimate(path, row.task, row.backend, row.config["options"], limits.get("max_batch_size", 32),
                                limits.get("context_length"))
        free = self._free()
        if estimate.total > free:
            raise Conflict(f"The model does not fit: it needs about {estimate.describe()}, and "
                           f"{fit.gib(max(free, 0))} is left for models on this server")
        return estimate.total

    def _free(self) -> int:
        """Bytes a new deployment may take now: what the machine has (less the server's reserve and
        what deployments still loading are about to take), within the deployment budget if set."""
        loading = sum(self._estimates.get(i, 0) for i, row in self._rows.items()
                      if row.status in ("initializing", "deploying"))
        free = fit.available_bytes() - int(self.settings.memory_reserve_gib * fit.GiB) - loading
        if self.settings.deploy_memory_gib is not None:
            free = min(free, int(self.settings.deploy_memory_gib * fit.GiB) - sum(self._estimates.values()))
        return free

    def _launch(self, row: Deployment, token: str | None = None) -> None:
        ref = self._ref(row)
        self.pool.hold(ref, "it is deploying; retry shortly", EngineState.LOADING)
        self._progress[row.deploy_id] = {"stage": "initializing", "started_at": time.time()}
        self._downloads[row.deploy_id] = Download()
        self._tasks[row.deploy_id] = asyncio.create_task(self._bring_up(row, token), name=f"deploy:{row.deploy_id}")

    async def _bring_up(self, row: Deployment, token: str | None) -> None:
        deploy_id = row.deploy_id
        progress = self._progress[deploy_id]
        try:
            await self._set(row, _BRING_UP, status="deploying", fail_reason=None)
            progress["stage"] = "fetching weights" if row.source.startswith("hf:") else "reading weights"
            bars = self._downloads[deploy_id].bars
            try:
                path = await asyncio.to_thread(fetch, row.source, token, download_cap(self.settings), bars)
            except SourceError as exc:
                return await self._fail(row, str(exc))
            if deploy_id not in self._estimates:
                async with self._fit_lock:
                    try:
                        self._estimates[deploy_id] = await asyncio.to_thread(self._estimate, row, path)
                    except Conflict as exc:
                        return await self._fail(row, exc.message)
            progress["stage"] = "loading weights and starting the runtime"
            engine = self.pool.add(self._ref(row))
            await self.pool.load(engine)
            if engine.state is not EngineState.READY:
                return await self._fail(row, engine.error or "it failed to start")
            progress["stage"] = "deployed"
            progress["seconds"] = round(time.time() - progress["started_at"], 1)
            if not await self._set(row, _BRING_UP, status="deployed"):
                return  # stopped or deleted by another process meanwhile: sync() takes it down here
            self._install(row.model_name)  # the newest deployed version is the default now
            log.info("deployment %s (%s) is up in %.1f s", deploy_id, row.model_name, progress["seconds"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a deployment fails; the server goes on
            log.exception("deployment %s failed", deploy_id)
            await self._fail(row, f"{type(exc).__name__}: {exc}")
        finally:
            if self._tasks.get(deploy_id) is asyncio.current_task():
                del self._tasks[deploy_id]

    async def _fail(self, row: Deployment, reason: str) -> None:
        log.error("deployment %s (%s) failed: %s", row.deploy_id, row.model_name, reason)
        self._progress.pop(row.deploy_id, None)
        self._downloads.pop(row.deploy_id, None)
        self._estimates.pop(row.deploy_id, None)
        ref = self._ref(row)
        await self.pool.remove(ref.key, Unloadable(ref, reason, EngineState.FAILED))
        await self._set(row, _BRING_UP, status="failed", fail_reason=reason[:2000])

    async def _set(self, row: Deployment, unless: tuple[str, ...] = (), **fields: Any) -> bool:
        """Change the row here and in the database; not where the database's status is one of
        ``unless`` (False then)."""
        if not await self.store.set(row.deploy_id, unless, **fields):
            return False
        for key, value in fields.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        return True

    def owned(self, deploy_id: str, account: str, admin: bool) -> Deployment:
        """A live deployment the caller may see (404 otherwise: another account's is not found either)."""
        row = self._rows.get(deploy_id) if len(deploy_id) <= 64 else None
        if row is None or not (admin or row.account_id == account):
            raise NotFound(f"No deployment {deploy_id[:64]!r}")
        return row

    def list(self, account: str | None) -> list[Deployment]:
        return [row for row in self._rows.values() if account is None or row.account_id == account]

    async def update(self, row: Deployment, settings: DeploySettings) -> Deployment:
        _check_bounds(settings)
        async with self._changing:
            scaling = {**row.config.get("scaling", {}), "min_instances": settings.min_instances,
                       "max_instances": settings.max_instances}
            await self._set(row, config={**row.config, "scaling": scaling})
            self._install(row.model_name)
        return row

    async def stop(self, row: Deployment) -> Deployment:
        async with self._changing:
            await self._halt(row, Unloadable(self._ref(row), _STOPPED, EngineState.STOPPED))
            await self._set(row, status="stopped")
            self._install(row.model_name)
        return row

    async def start(self, row: Deployment) -> Deployment:
        async with self._changing:
            if row.status not in ("stopped", "failed"):
                raise Conflict(f"Deployment {row.deploy_id} is {row.status}; only a stopped or failed one starts")
            await self._set(row, status="initializing", fail_reason=None)
            self._launch(row)
        return row

    async def delete(self, row: Deployment) -> Deployment:
        async with self._changing:
            if self._rows.pop(row.deploy_id, None) is None:  # gone meanwhile (another process deleted it)
                raise NotFound(f"No deployment {row.deploy_id!r}")
            self._install(row.model_name)  # out of the catalog first: no request finds it from here on
            await self._halt(row)
            await self._set(row, status="deleted")
        return row

    async def _halt(self, row: Deployment, stand_in: Unloadable | None = None) -> None:
        """Stop a deployment's bring-up and engine (``stand_in`` answers in its place); its memory
        goes back."""
        await cancel(self._tasks.pop(row.deploy_id, None))
        self._progress.pop(row.deploy_id, None)
        self._downloads.pop(row.deploy_id, None)
        self._estimates.pop(row.deploy_id, None)
        await self.pool.remove(self._ref(row).key, stand_in)

    def progress(self, row: Deployment) -> dict | None:
        progress = self._progress.get(row.deploy_id)
        if progress is None or row.status not in ("initializing", "deploying"):
            return None
        download = self._downloads.get(row.deploy_id)
        sizes = download.bytes() if download is not None else None
        if sizes is not None:  # a hub download's bytes so far (then in all), of the files it fetches
            progress = {**progress, "bytes_downloaded": sizes[0], "bytes_to_download": sizes[1]}
        return {**progress, "memory_estimate_bytes": self._estimates.get(row.deploy_id),
                "seconds": round(time.time() - progress["started_at"], 1)}

    def engine(self, row: Deployment) -> Engine | None:
        return self.pool.find(self._ref(row).key)

    # --- the catalog entries of a model name

    def _ref(self, row: Deployment) -> ModelRef:
        version = _version(row)
        return ModelRef(_spec(row, (version,)), version)

    def _install(self, name: str) -> None:
        """(Re)install a model name's versions in the catalog: the newest deployed one first (the
        default), then the others, newest first; uninstalled when none is left."""
        rows = [row for row in self._rows.values() if row.model_name == name]
        if not rows:
            self.catalog.uninstall(name)
            return
        rows.sort(key=lambda r: (r.status == "deployed", aware(r.created_at), r.id or 0), reverse=True)
        versions = tuple(_version(r) for r in rows)
        specs = {r.deploy_id: _spec(r, versions) for r in rows}
        self.catalog.install(specs[rows[0].deploy_id], specs)


_STOPPED = "the deployment is stopped (POST /deploy/{id}/start starts it)"
# a bring-up's own status changes do not overwrite a stop or delete another process made meanwhile
_BRING_UP = ("stopped", "deleted")


def _check_bounds(settings: DeploySettings) -> None:
    if settings.min_instances > settings.max_instances:
        raise InvalidRequest(f"min_instances {settings.min_instances} is above max_instances "
                             f"{settings.max_instances}", param="settings")


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel a bring-up and wait until it has stopped."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def weights_source(settings: Settings, hf, path: str | None) -> tuple[str, Path | None]:
    """The catalog source string for a client's ``hf`` or ``path``, and the local path when the
    weights are already on disk; 400/403 for what this server does not allow."""
    if (hf is None) == (path is None):
        raise InvalidRequest("Send `hf` (a Hugging Face repository) or `path` (a local directory), one of them",
                             param="hf")
    if hf is not None:
        if not settings.deploy_from_hub:
            raise Forbidden("This server does not deploy from the Hugging Face hub (deploy_from_hub is off)")
        return f"hf:{hf.repo}" + (f"@{hf.revision}" if hf.revision else ""), None
    roots = [Path(root).expanduser().resolve() for root in settings.deploy_paths]
    try:
        local = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        local = None
    if local is None or not any(local == root or local.is_relative_to(root) for root in roots):
        # the same answer whether it exists or not: a client learns nothing of the server's files
        raise Forbidden("`path` must name an existing file or directory under one this server allows "
                        "(deploy_paths)")
    return f"path:{local}", local


def _version(row: Deployment) -> VersionSpec:
    return VersionSpec(name=row.deploy_id, source=row.source, deploy_id=row.deploy_id)


def _spec(row: Deployment, versions: tuple[VersionSpec, ...]) -> ModelSpec:
    config = row.config
    return ModelSpec(
        id=row.model_name, task=Task(row.task), backend=row.backend, versions=versions,
        limits=Limits(**config.get("limits", {})), scaling=Scaling(**config.get("scaling", {})),
        options=dict(config.get("options", {})), description=config.get("description", ""),
        owned_by=row.account_id, owner=row.account_id, private=bool(config.get("private", True)),
        tags=("deployment",),
    )


def download_cap(settings: Settings) -> int:
    return int(settings.deploy_max_download_gib * fit.GiB)


def fetch(source: str, token: str | None, max_bytes: int | None = None, progress: Any = None) -> Path:
    """The weights on disk (a download from the hub when they are not in its cache; ``progress``:
    the tqdm class it reports its bytes to, ``Download.bars``). A repository the hub says is larger
    than ``max_bytes`` is not downloaded (a client must not fill the disk)."""
    if source.startswith("hf:") and max_bytes is not None:
        size = _hub_size(source, token)
        if size is not None and size > max_bytes:
            raise SourceError(f"{source[3:]} is {fit.gib(size)} on the hub; this server downloads at most "
                              f"{fit.gib(max_bytes)} for a deployment (deploy_max_download_gib)")
    return resolve_source(source, token, progress)


def _hub_size(source: str, token: str | None) -> int | None:
    """The repository's size by the hub's own file list, or None when the hub cannot say (offline:
    then only its cache can serve it)."""
    from huggingface_hub import HfApi

    repo, _, revision = source[3:].partition("@")
    try:
        info = HfApi().model_info(repo, revision=revision or None, token=token or None, files_metadata=True)
    except Exception:  # noqa: BLE001 - unreachable, unknown or gated: the download says why, or the cache serves
        return None
    return sum(int(s.size or 0) for s in info.siblings or ())
