"""Rerank through a real `inferd serve` on the default catalog, with the clients people use:
LiteLLM's `deepinfra/` and `infinity/` providers, the cohere SDK (`Client` and `ClientV2`), curl-like HTTP."""

from __future__ import annotations

import httpx
import pytest

RERANKER = "inferd/minilm-bi-encoder-reranker"
QUERY = "What is the capital of France?"
DOCS = ["Bananas are rich in potassium.", "Paris is the capital of France.", "Berlin is the capital of Germany."]


def test_litellm_deepinfra_rerank(server):
    import litellm

    result = litellm.rerank(model=f"deepinfra/{RERANKER}", query=QUERY, documents=DOCS,
                            api_base=f"{server.base_url}/v1/openai", api_key=server.token)
    ranked = sorted(result.results, key=lambda r: -r["relevance_score"])
    assert ranked[0]["index"] == 1 and len(ranked) == 3
    assert all(0 <= r["relevance_score"] <= 1 for r in ranked)


def test_litellm_infinity_rerank(server):
    import litellm

    result = litellm.rerank(model=f"infinity/{RERANKER}", query=QUERY, documents=DOCS, top_n=2,
                            api_base=server.base_url, api_key=server.token)
    assert [r["index"] for r in result.results][0] == 1 and len(result.results) == 2
    assert result.results[0]["document"]["text"] == DOCS[1]


def test_cohere_client_v1(server):
    import cohere

    co = cohere.Client(api_key=server.token, base_url=server.base_url)
    response = co.rerank(model="reranker", query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert response.results[0].index == 1 and len(response.results) == 2
    assert response.results[0].document.text == DOCS[1]
    assert response.results[0].relevance_score >= response.results[1].relevance_score


def test_cohere_client_v2(server):
    import cohere

    co = cohere.ClientV2(api_key=server.token, base_url=server.base_url)
    response = co.rerank(model=RERANKER, query=QUERY, documents=DOCS, max_tokens_per_doc=64)
    assert response.results[0].index == 1 and len(response.results) == 3
    assert response.results[0].relevance_score >= response.results[-1].relevance_score


def test_cohere_sdk_sees_a_bad_request_as_one(server):
    import cohere

    co = cohere.ClientV2(api_key=server.token, base_url=server.base_url)
    with pytest.raises(cohere.errors.BadRequestError):
        co.rerank(model=RERANKER, query=QUERY, documents=[])


def test_raw_http_native_rerank(server):
    r = httpx.post(f"{server.base_url}/v1/inference/{RERANKER}", headers=server.headers(),
                   json={"queries": [QUERY] * 3, "documents": DOCS})
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert scores.index(max(scores)) == 1 and r.json()["inference_status"]["status"] == "succeeded"
