"""create_app(settings): the whole server, built from one Settings object."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from inferd import __version__
from inferd.accounts.db import Database
from inferd.accounts.limits import Limits, LocalSlots, SharedSlots, SharedTokensPerMinute
from inferd.accounts.models import ADMIN_ACCOUNT
from inferd.accounts.scoped import ScopedTokens
from inferd.accounts.spending import SpendLedger
from inferd.accounts.store import AccountStore
from inferd.accounts.tokens import TokenStore
from inferd.accounts.usage import UsageRecorder
from inferd.api import (accounts, anthropic, cohere, deploy, elevenlabs, inference, infinity, lora, openai, platform,
                        system)
from inferd.api.errors import install_error_handlers
from inferd.api.middleware import RequestContextMiddleware
from inferd.api.state import AppState
from inferd.catalog import Catalog, load_catalog
from inferd.deployments.adapters import Adapters
from inferd.deployments.manager import Deployments
from inferd.deployments.store import DeploymentStore
from inferd.engine.pool import EngineFactory, ModelPool
from inferd.serving.adapters import AdapterService
from inferd.serving.deployments import DeploymentService
from inferd.observability.metrics import Metrics
from inferd.serving.embeddings import EmbeddingService
from inferd.serving.generation import GenerationService
from inferd.serving.metering import Meter
from inferd.serving.prompt import PromptPipeline
from inferd.serving.rerank import RerankService
from inferd.serving.speech import SpeechService
from inferd.serving.synthesis import SynthesisService
from inferd.serving.images import ImageService
from inferd.serving.text_tasks import TextTaskService
from inferd.serving.vision import VisionService
from inferd.serving.tenancy import Tenancy
from inferd.settings import Settings

log = logging.getLogger("inferd")


def build_state(settings: Settings, catalog: Catalog | None = None, engines: EngineFactory | None = None) -> AppState:
    """Construct every part (no I/O, no model loading: that happens at start-up). ``engines``
    builds each model's engine (default: loaded in this process)."""
    catalog = catalog if catalog is not None else load_catalog(settings.catalog)
    db = Database(settings.resolved_database_url())
    metrics = Metrics()
    usage = UsageRecorder(db, settings.usage_flush_interval_s, settings.usage_flush_batch,
                          journal=settings.data_dir / "usage-journal.jsonl")
    pool = ModelPool(catalog, settings, metrics, engines)
    spending = SpendLedger(db, usage.flush, settings.token_cache_ttl_s)
    if settings.shared_limits():
        slots = SharedSlots(db, settings.limit_lease_s)
        limits = Limits(slots, settings.rate_limit, settings.tpm_rate_limit, SharedTokensPerMinute(db, slots.holder))
    else:
        limits = Limits(LocalSlots(), settings.rate_limit, settings.tpm_rate_limit)
    meter = Meter(usage, metrics, spending, limits)
    prompts = PromptPipeline(settings)
    tokens = TokenStore(db, settings.token_cache_ttl_s)
    scoped = ScopedTokens(db, tokens, settings.scoped_token_secret)
    account_store = AccountStore(db, tokens)
    return AppState(
        settings=settings,
        catalog=catalog,
        db=db,
        tokens=tokens,
        scoped=scoped,
        spending=spending,
        limits=limits,
        accounts=account_store,
        tenancy=Tenancy(db, tokens, scoped, account_store, usage, catalog, limits),
        usage=usage,
        metrics=metrics,
        pool=pool,
        embeddings=EmbeddingService(pool, meter, settings),
        generation=GenerationService(pool, meter, prompts),
        rerank=RerankService(pool, meter, settings),
        speech=SpeechService(pool, meter, settings),
        synthesis=SynthesisService(pool, meter, settings),
        images=ImageService(pool, meter, settings),
        vision=VisionService(pool, meter, settings),
        text_tasks=TextTaskService(pool, meter),
        deploys=DeploymentService(Deployments(DeploymentStore(db), catalog, pool, settings), usage),
        adapters=AdapterService(Adapters(db, catalog, pool, settings)),
    )


def create_app(settings: Settings, catalog: Catalog | None = None, engines: EngineFactory | None = None) -> FastAPI:
    state = build_state(settings, catalog, engines)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.db.migrate()
        await state.scoped.start()
        if settings.auth:
            admin = await state.tokens.ensure_admin(settings.admin_token)
            if admin:
                announce_admin_token(admin, settings)
            else:
                log.info("tokens required: send `Authorization: Bearer <token>` (accounts and tokens: "
                         "/v1/accounts, /v1/api-tokens, `inferd accounts --help`)")
        else:
            await state.tokens.ensure_account(ADMIN_ACCOUNT, "admin", admin=True)  # every caller acts as it
            log.warning("authentication is OFF (--no-auth): anyone who can reach this port can use it")
        await state.usage.start()
        await state.limits.start()
        state.pool.start()
        await state.deploys.deployments.restore()
        await state.adapters.adapters.restore()  # after the deployments: their bases may be deployments
        # other processes' changes, from the database
        state.deploys.deployments.follow(settings.deploy_sync_s, state.adapters.adapters.sync)
        log.info("inferd %s listening on http://%s:%d (docs at /docs)", __version__, settings.host, settings.port)
        try:
            yield
        finally:
            await state.adapters.adapters.close()
            await state.deploys.deployments.close()
            await state.pool.stop()
            await state.limits.stop()
            state.generation.prompts.close()
            await state.usage.stop()
            await state.tokens.settle()
            await state.db.close()
            log.info("inferd stopped; usage records flushed")

    app = FastAPI(
        title="inferd",
        version=__version__,
        description="Open models behind DeepInfra's, OpenAI's and Infinity's APIs.",
        lifespan=lifespan,
        **({"docs_url": None, "redoc_url": None, "openapi_url": None} if settings.docs_auth else {}),
    )
    app.state.inferd = state
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics, access_log=settings.access_log,
                       requests_per_turn=settings.requests_per_turn)

    app.include_router(system.router)
    if settings.docs_auth:
        system.add_guarded_docs(app)
    app.include_router(openai.router, prefix="/v1/openai")
    app.include_router(openai.router, prefix="/v1", include_in_schema=False)
    app.include_router(inference.router)
    app.include_router(cohere.router)
    app.include_router(lora.router)  # before platform's /models/{name}: /models/lora/list is its own
    app.include_router(platform.router)
    app.include_router(deploy.router)
    app.include_router(accounts.router)
    app.include_router(anthropic.router, prefix="/anthropic")
    app.include_router(elevenlabs.router)
    prefix = settings.infinity_prefix.rstrip("/")
    app.include_router(infinity.router, prefix=prefix)
    if prefix:
        app.include_router(infinity.health_router, prefix=prefix)
    return app


def announce_admin_token(token: str, settings: Settings) -> None:
    base = f"http://{settings.host}:{settings.port}"
    print(
        "\n"
        "  inferd created the admin API token. It is shown only this once; keep it:\n\n"
        f"      {token}\n\n"
        "  Try it:\n"
        f"      curl {base}/v1/openai/embeddings \\\n"
        f"        -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        "        -d '{\"model\": \"sentence-transformers/all-MiniLM-L6-v2\", \"input\": \"hello\"}'\n\n"
        "  More tokens: `inferd tokens create NAME`.\n",
        flush=True,
    )


def serve_http(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` on the settings' host and port until SIGINT/SIGTERM (uvicorn: uvloop,
    httptools, the keep-alive the settings give)."""
    import uvicorn

    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False, loop="uvloop",
                http="httptools", timeout_graceful_shutdown=10, timeout_keep_alive=settings.keep_alive_s)
