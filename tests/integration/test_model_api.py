"""DeepInfra's model API (/models/list, /models/{name}, /models/{name}/schema/{variant}) and the
same fields on /v1/openai/models, on the shipped MiniLM as an embedder and a reranker, and a
text-generation entry whose weights are missing (listed, with its failure)."""

from __future__ import annotations

import jsonschema
import pytest

from inferd.catalog import load_catalog
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import MINILM, make_settings, start_app

RERANKER = "inferd/minilm-bi-encoder-reranker"


@pytest.fixture(scope="module")
async def app(tmp_path_factory):
    shipped = [spec for spec in load_catalog() if spec.id in (MINILM, RERANKER)]
    missing = ModelSpec(id="acme/gone-llm", task="text-generation", backend="transformers",
                        source=str(tmp_path_factory.mktemp("nothing") / "absent"), deprecated=True,
                        replaced_by=MINILM, quantization="bf16", tags=["chat"])
    async for h in start_app(make_settings(tmp_path_factory.mktemp("models")), Catalog([*shipped, missing])):
        yield h


async def test_the_list_in_deepinfras_fields(app):
    r = await app.client.get("/models/list")
    assert r.status_code == 200
    models = {m["model_name"]: m for m in r.json()}
    assert set(models) == {MINILM, RERANKER, "acme/gone-llm"}
    minilm = models[MINILM]
    assert minilm["type"] == minilm["reported_type"] == "embeddings"
    assert minilm["pricing"] == {"type": "input_tokens", "cents_per_input_token": 0.0000005}
    assert minilm["max_tokens"] == 256 and minilm["status"] == "ready" and minilm["private"] is False
    assert minilm["deprecated"] is False and minilm["replaced_by"] is None
    assert "default" in minilm["aliases"] and minilm["schema_variants"] == ["default", "openai-embeddings"]
    gone = models["acme/gone-llm"]
    assert gone["deprecated"] is True and gone["replaced_by"] == MINILM and gone["quantization"] == "bf16"
    assert gone["status"] == "failed" and gone["error"]


async def test_one_model_with_the_schemas_its_route_validates_with(app):
    r = await app.client.get(f"/models/{MINILM}")
    assert r.status_code == 200
    model = r.json()
    assert model["model_name"] == MINILM
    # the schema is the one the native route validates with: a real request passes, a bad one does not
    jsonschema.validate({"inputs": ["a sentence"], "normalize": True}, model["in_schema"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"inputs": 3}, model["in_schema"])
    served = await app.client.post(f"/v1/inference/{MINILM}", json={"inputs": ["a sentence"]})
    jsonschema.validate(served.json(), model["out_schema"])
    by_alias = await app.client.get("/models/all-MiniLM-L6-v2")
    assert by_alias.json()["model_name"] == MINILM


async def test_schema_variants(app):
    r = await app.client.get(f"/models/{MINILM}/schema/openai-embeddings")
    assert r.status_code == 200
    body = r.json()
    assert "input" in body["in_schema"]["properties"] and "data" in body["out_schema"]["properties"]
    reranker = (await app.client.get(f"/models/{RERANKER}/schema/default")).json()
    assert {"queries", "documents"} <= set(reranker["in_schema"]["properties"])
    llm = (await app.client.get("/models/acme/gone-llm/schema/default")).json()
    assert "input" in llm["in_schema"]["properties"]


async def test_unknown_models_and_variants_are_404_without_echoing_long_input(app):
    r = await app.client.get("/models/nobody/here")
    assert r.status_code == 404
    r = await app.client.get("/models/" + "x" * 5000)
    assert r.status_code == 404 and len(r.text) < 1000
    r = await app.client.get(f"/models/{MINILM}/schema/" + "<script>" * 10)
    assert r.status_code == 404 and "<script>" not in r.text and "openai-embeddings" in r.text


async def test_a_token_is_needed(app):
    for path in ("/models/list", f"/models/{MINILM}", f"/models/{MINILM}/schema/default"):
        r = await app.client.get(path, headers={"Authorization": "Bearer inferd_wrong"})
        assert r.status_code == 401, path


async def test_the_same_fields_on_the_openai_model_list(app):
    data = {m["id"]: m for m in (await app.client.get("/v1/openai/models")).json()["data"]}
    meta = data[MINILM]["metadata"]
    assert meta["type"] == "embeddings" and meta["max_tokens"] == 256 and meta["private"] is False
    assert data["acme/gone-llm"]["metadata"]["deprecated"] is True
