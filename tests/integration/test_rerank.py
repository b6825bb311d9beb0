"""Rerank in its three dialects (DeepInfra native, Cohere v1/v2, Infinity) on the three
reranker backends: a tiny random cross-encoder, a tiny random LM judge, MiniLM as a bi-encoder."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from sqlalchemy import select

from inferd.accounts.models import UsageRecord
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import make_settings, start_app

PRICING = {"type": "input_tokens", "cents_per_input_token": 0.00001}
QUERY = "What is the capital of France?"
DOCS = ["The mitochondria is the powerhouse of the cell.", "Paris is the capital of France.",
        "Berlin is the capital of Germany.", "Bananas are rich in potassium."]


@pytest.fixture(scope="module")
async def rr(tmp_path_factory, tiny_cross_encoder_dir, tiny_lm_dir, minilm_path):
    catalog = Catalog([
        ModelSpec(id="ce", task="reranker", backend="cross-encoder", source=str(tiny_cross_encoder_dir),
                  pricing=PRICING, limits={"context_length": 64, "max_inputs": 500}),
        ModelSpec(id="judge", task="reranker", backend="lm-judge", source=str(tiny_lm_dir), pricing=PRICING),
        ModelSpec(id="bi", task="reranker", backend="bi-encoder", source=str(minilm_path), pricing=PRICING,
                  aliases=("rerank-default",)),
    ])
    async for h in start_app(make_settings(tmp_path_factory.mktemp("rerank")), catalog):
        yield h


async def test_native_queries_as_litellm_sends_them(rr, st_model):
    r = await rr.client.post("/v1/inference/bi", json={"queries": [QUERY] * len(DOCS), "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    vectors = st_model.encode([QUERY, *DOCS], normalize_embeddings=True)
    np.testing.assert_allclose(body["scores"], (vectors[1:] @ vectors[0] + 1) / 2, atol=1e-5)
    assert int(np.argmax(body["scores"])) == 1
    assert body["input_tokens"] > 0 and body["request_id"] and body["inference_status"]["status"] == "succeeded"
    assert body["inference_status"]["cost"] == pytest.approx(body["input_tokens"] * 0.00001 / 100)
    await rr.state.usage.flush()
    async with rr.state.db.sessions() as session:
        row = await session.scalar(select(UsageRecord).where(UsageRecord.request_id == body["request_id"]))
    assert row.task == "reranker" and row.input_tokens == body["input_tokens"] and row.status == "succeeded"
    same = await rr.client.post("/v1/inference/bi", json={"query": QUERY, "documents": DOCS})
    np.testing.assert_allclose(same.json()["scores"], body["scores"], atol=1e-6)


async def test_native_cross_encoder_matches_predict_and_different_queries_per_document(rr, tiny_cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    queries = [QUERY, "Where is Paris?", QUERY, "potassium"]
    r = await rr.client.post("/v1/inference/ce", json={"queries": queries, "documents": DOCS})
    expected = CrossEncoder(str(tiny_cross_encoder_dir), max_length=64).predict(list(zip(queries, DOCS)))
    np.testing.assert_allclose(r.json()["scores"], expected, atol=1e-5)


async def test_native_judge_takes_an_instruction(rr):
    plain = (await rr.client.post("/v1/inference/judge", json={"query": QUERY, "documents": DOCS})).json()["scores"]
    told = await rr.client.post("/v1/inference/judge", json={"query": QUERY, "documents": DOCS,
                                                               "instruction": "Rank documents about fruit first"})
    assert told.status_code == 200 and all(0 <= s <= 1 for s in told.json()["scores"])
    assert not np.allclose(plain, told.json()["scores"])


async def test_concurrent_requests_get_their_own_scores(rr):
    bodies = [{"query": f"question {i}", "documents": DOCS[i % 4:] + DOCS[: i % 4]} for i in range(12)]
    alone = [(await rr.client.post("/v1/inference/ce", json=b)).json()["scores"] for b in bodies]
    together = await asyncio.gather(*[rr.client.post("/v1/inference/ce", json=b) for b in bodies])
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_allclose(t.json()["scores"], a, atol=1e-5)


async def test_cohere_v1_sorted_cut_with_documents(rr):
    docs = [DOCS[0], {"text": DOCS[1]}, DOCS[2], {"text": DOCS[3]}]
    r = await rr.client.post("/v1/rerank", json={"model": "bi", "query": QUERY, "documents": docs, "top_n": 2,
                                                   "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert len(results) == 2 and results[0]["index"] == 1 and results[0]["document"] == {"text": DOCS[1]}
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert body["meta"]["billed_units"]["search_units"] == 1 and body["id"]
    plain = (await rr.client.post("/v1/rerank", json={"model": "bi", "query": QUERY, "documents": DOCS})).json()
    assert len(plain["results"]) == 4 and "document" not in plain["results"][0]


async def test_cohere_v2_max_tokens_per_doc_and_no_documents(rr):
    long = DOCS[1] + " It has many museums." * 40
    full = await rr.client.post("/v2/rerank", json={"model": "bi", "query": QUERY, "documents": [long, DOCS[0]]})
    cut = await rr.client.post("/v2/rerank", json={"model": "bi", "query": QUERY, "documents": [long, DOCS[0]],
                                                     "max_tokens_per_doc": 8, "return_documents": True})
    assert full.status_code == cut.status_code == 200
    body = cut.json()
    assert "document" not in body["results"][0] and body["meta"]["tokens"]["input_tokens"] > 0
    assert body["meta"]["tokens"]["input_tokens"] < full.json()["meta"]["tokens"]["input_tokens"]
    score = {x["index"]: x["relevance_score"] for x in body["results"]}
    only = (await rr.client.post("/v2/rerank", json={"model": "bi", "query": QUERY,
                                                      "documents": ["Paris is the capital of France. It"]})).json()
    assert score[0] == pytest.approx(only["results"][0]["relevance_score"], abs=1e-5)


async def test_infinity_rerank_plain_documents_and_raw_scores(rr):
    r = await rr.client.post("/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS, "top_n": 3,
                                               "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "rerank" and body["model"] == "ce" and body["usage"]["prompt_tokens"] > 0
    assert len(body["results"]) == 3 and all(isinstance(x["document"], str) for x in body["results"])
    raw = (await rr.client.post("/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS,
                                                  "raw_scores": True})).json()["results"]
    by_index = {x["index"]: x["relevance_score"] for x in raw}
    for item in body["results"]:
        assert item["relevance_score"] == pytest.approx(1 / (1 + np.exp(-by_index[item["index"]])), abs=1e-6)
        assert DOCS[item["index"]] == item["document"]


async def test_the_default_alias_and_ranking(rr):
    r = await rr.client.post("/rerank", json={"model": "rerank-default", "query": QUERY, "documents": DOCS})
    assert r.json()["results"][0]["index"] == 1


async def test_bad_input_is_a_clear_4xx_in_each_dialect(rr):
    c = rr.client
    r = await c.post("/v1/inference/bi", json={"query": QUERY, "documents": []})
    assert r.status_code == 400 and "documents" in r.json()["error"]
    r = await c.post("/v1/inference/bi", json={"query": "  ", "documents": DOCS})
    assert r.status_code == 400 and "query" in r.json()["error"]
    r = await c.post("/v1/inference/bi", json={"queries": [QUERY, QUERY], "documents": DOCS})
    assert r.status_code == 400 and "queries" in r.json()["error"]
    r = await c.post("/v1/inference/bi", json={"documents": DOCS})
    assert r.status_code == 400
    r = await c.post("/v1/rerank", json={"model": "bi", "query": QUERY, "documents": DOCS, "top_n": 0})
    assert r.status_code == 400 and "top_n" in r.json()["message"]
    r = await c.post("/v2/rerank", json={"model": "bi", "query": "", "documents": DOCS})
    assert r.status_code == 400 and "query" in r.json()["message"]
    r = await c.post("/v1/rerank", json={"model": "nope", "query": QUERY, "documents": DOCS})
    assert r.status_code == 404 and "nope" in r.json()["message"]
    r = await c.post("/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS, "top_n": -1})
    assert r.status_code == 422
    r = await c.post("/rerank", json={"model": "ce", "query": QUERY, "documents": ["x"] * 3000})
    assert r.status_code == 413 and "at most 500" in r.json()["error"]["message"]


async def test_long_documents_are_cut_not_refused(rr):
    r = await rr.client.post("/rerank", json={"model": "ce", "query": QUERY, "documents": ["word " * 2000, DOCS[1]]})
    assert r.status_code == 200 and len(r.json()["results"]) == 2



@pytest.fixture(scope="module")
async def default_reranker(tmp_path_factory):
    from inferd.catalog import Task, load_catalog

    catalog = Catalog([spec for spec in load_catalog() if spec.task is Task.RERANKER])
    assert len(catalog) == 1
    async for h in start_app(make_settings(tmp_path_factory.mktemp("default-rr")), catalog):
        yield h


FACTS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
]


async def test_the_default_catalog_reranker_puts_the_answer_first(default_reranker):
    documents = [answer for _, answer in FACTS] + ["The stock market fell on Tuesday.", "Cats sleep a lot."]
    for question, answer in FACTS:
        r = await default_reranker.client.post("/rerank", json={"model": "default", "query": question,
                                                                  "documents": documents[::-1]})
        assert r.status_code == 200, r.text
        top = r.json()["results"][0]
        assert documents[::-1][top["index"]] == answer, (question, r.json())
