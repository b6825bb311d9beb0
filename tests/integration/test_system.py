"""Health, metrics, OpenAPI docs, usage records, request ids."""


from sqlalchemy import select

from inferd.accounts.models import UsageRecord
from tests.conftest import MINILM


async def test_health_needs_no_token_and_lists_models(harness):
    r = await harness.client.get("/health", headers={"Authorization": ""})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ok"
    assert body["models"][f"{MINILM}:1"] == {"status": "ready"}


async def test_metrics_count_requests_batches_queue_and_tokens(harness):
    await harness.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": ["metrics please"]})
    text = (await harness.client.get("/metrics")).text
    assert 'inferd_http_requests_total{route="/v1/openai/embeddings",status="200"}' in text
    assert "inferd_http_request_duration_seconds_bucket" in text
    assert f'inferd_batch_size_count{{model="{MINILM}"}}' in text
    assert f'inferd_queue_depth{{model="{MINILM}"}} 0.0' in text
    assert f'inferd_tokens_total{{kind="input",model="{MINILM}"}}' in text
    assert f'inferd_model_requests_total{{model="{MINILM}",status="succeeded",task="embeddings"}}' in text


async def test_openapi_docs_are_served(harness):
    assert (await harness.client.get("/docs")).status_code == 200
    spec = (await harness.client.get("/openapi.json")).json()
    assert "/v1/openai/embeddings" in spec["paths"] and "/v1/inference/{model}" in spec["paths"]


async def test_every_request_leaves_a_usage_record(harness):
    ok = await harness.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": ["one", "two"]})
    bad = await harness.client.post(
        f"/v1/inference/{MINILM}", json={"inputs": ["x"] * 5000}
    )
    assert ok.status_code == 200 and bad.status_code == 413
    await harness.state.usage.flush()
    async with harness.state.db.sessions() as session:
        rows = {
            r.request_id: r
            for r in await session.scalars(
                select(UsageRecord).where(
                    UsageRecord.request_id.in_([ok.headers["x-request-id"], bad.headers["x-request-id"]])
                )
            )
        }
    good = rows[ok.headers["x-request-id"]]
    assert good.status == "succeeded" and good.model == MINILM and good.task == "embeddings"
    assert good.input_tokens == ok.json()["usage"]["prompt_tokens"]
    assert good.cost_nano_usd > 0 and good.pricing_type == "input_tokens"
    assert round(ok.json()["usage"]["estimated_cost"] * 10**9) == good.cost_nano_usd  # the same figure, exactly
    assert good.token_id is not None and good.account_id == "acc_admin" and good.runtime_ms >= 0
    failed = rows[bad.headers["x-request-id"]]
    assert failed.status == "failed" and failed.cost_nano_usd == 0 and failed.input_tokens == 0


async def test_the_request_id_is_taken_from_the_client(harness):
    r = await harness.client.post(
        "/v1/openai/embeddings", json={"model": "org/absent", "input": "x"}, headers={"X-Request-ID": "client-id-1"}
    )
    assert r.headers["x-request-id"] == "client-id-1"
    r = await harness.client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"
