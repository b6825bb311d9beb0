"""Infinity's API: /embeddings, /models, /health (root prefix by default, configurable)."""

import numpy as np
import pytest

from tests.conftest import MINILM, make_settings, start_app


async def test_infinity_embeddings(harness, st_model):
    r = await harness.client.post("/embeddings", json={"model": MINILM, "input": ["hello", "world"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["id"].startswith("infinity-") and body["created"] > 0
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], st_model.encode(["hello", "world"]), atol=1e-5)
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


async def test_infinity_rejects_other_modalities(harness):
    r = await harness.client.post("/embeddings", json={"model": MINILM, "input": ["x"], "modality": "image"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "modality"


async def test_infinity_validation_is_422(harness):
    r = await harness.client.post("/embeddings", json={"model": MINILM})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "input"]


async def test_infinity_models_and_health(harness):
    models = (await harness.client.get("/models")).json()
    entry = next(m for m in models["data"] if m["id"] == MINILM)
    assert entry["capabilities"] == ["embed"] and entry["backend"] == "sentence-transformers"
    health = (await harness.client.get("/health", headers={"Authorization": ""})).json()
    assert isinstance(health["unix"], float)


@pytest.fixture(scope="module")
async def prefixed(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("prefixed"), infinity_prefix="/infinity")
    async for h in start_app(settings):
        yield h


async def test_a_configured_prefix_moves_the_infinity_api(prefixed):
    client = prefixed.client
    assert (await client.post("/infinity/embeddings", json={"model": MINILM, "input": "x"})).status_code == 200
    assert (await client.get("/infinity/models")).status_code == 200
    assert "unix" in (await client.get("/infinity/health", headers={"Authorization": ""})).json()
    assert (await client.post("/embeddings", json={"model": MINILM, "input": "x"})).status_code == 404
