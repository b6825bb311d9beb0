"""Everything a request needs, built once by create_app() and reached through the app."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from inferd.accounts.db import Database
from inferd.accounts.limits import Limits
from inferd.accounts.scoped import ScopedTokens
from inferd.accounts.spending import SpendLedger
from inferd.accounts.store import AccountStore
from inferd.accounts.tokens import TokenStore
from inferd.accounts.usage import UsageRecorder
from inferd.catalog import Catalog
from inferd.engine.pool import ModelPool
from inferd.observability.metrics import Metrics
from inferd.serving.adapters import AdapterService
from inferd.serving.deployments import DeploymentService
from inferd.serving.embeddings import EmbeddingService
from inferd.serving.generation import GenerationService
from inferd.serving.images import ImageService
from inferd.serving.text_tasks import TextTaskService
from inferd.serving.vision import VisionService
from inferd.serving.rerank import RerankService
from inferd.serving.speech import SpeechService
from inferd.serving.synthesis import SynthesisService
from inferd.serving.tenancy import Tenancy
from inferd.settings import Settings


@dataclass(slots=True)
class AppState:
    settings: Settings
    catalog: Catalog
    db: Database
    tokens: TokenStore
    scoped: ScopedTokens
    spending: SpendLedger
    limits: Limits
    accounts: AccountStore
    tenancy: Tenancy
    usage: UsageRecorder
    metrics: Metrics
    pool: ModelPool
    embeddings: EmbeddingService
    generation: GenerationService
    rerank: RerankService
    speech: SpeechService
    synthesis: SynthesisService
    images: ImageService
    vision: VisionService
    text_tasks: TextTaskService
    deploys: DeploymentService
    adapters: AdapterService


async def app_state(request: Request) -> AppState:
    return request.app.state.inferd
