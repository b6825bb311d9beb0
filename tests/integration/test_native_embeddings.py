"""DeepInfra's native route for embeddings: JSON, multipart, versions, envelope, errors."""

import numpy as np
import pytest

from tests.conftest import MINILM

URL = f"/v1/inference/{MINILM}"


async def test_json_request_gives_embeddings_and_the_envelope(harness, st_model):
    texts = ["hello there", "general kenobi"]
    r = await harness.client.post(URL, json={"inputs": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_allclose(body["embeddings"], st_model.encode(texts), atol=1e-5)
    assert body["input_tokens"] == 10
    assert body["request_id"] == r.headers["x-request-id"]
    status = body["inference_status"]
    assert status["status"] == "succeeded" and status["tokens_input"] == 10
    assert status["cost"] == pytest.approx(10 * 0.0000005 / 100)
    assert status["runtime_ms"] >= 0


async def test_multipart_form_is_accepted(harness):
    r = await harness.client.post(URL, files=[("inputs", (None, "first")), ("inputs", (None, "second")), ("normalize", (None, "true"))])
    assert r.status_code == 200, r.text
    assert len(r.json()["embeddings"]) == 2


async def test_curl_style_json_without_content_type(harness):
    r = await harness.client.post(
        URL, content=b'{"inputs": ["hi"]}', headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 200, r.text


async def test_versions_by_suffix_and_query(harness):
    assert (await harness.client.post(f"{URL}:1", json={"inputs": ["a"]})).status_code == 200
    assert (await harness.client.post(f"{URL}?version=1", json={"inputs": ["a"]})).status_code == 200
    r = await harness.client.post(f"{URL}:nope", json={"inputs": ["a"]})
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


async def test_validation_errors_keep_fastapi_detail(harness):
    r = await harness.client.post(URL, json={"inputs": "not-a-list-of", "normalize": "maybe"})
    assert r.status_code == 422
    assert {tuple(e["loc"]) for e in r.json()["detail"]} == {("body", "normalize")}
    r = await harness.client.post(URL, json={"text": "wrong field"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "inputs"]
    r = await harness.client.post(URL, content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422


async def test_domain_errors_are_plain_strings(harness):
    r = await harness.client.post(URL, json={"inputs": []})
    assert r.status_code == 400 and r.json() == {"error": "input must not be empty"}
    r = await harness.client.post(URL, json={"inputs": ["x"], "image": "data:image/png;base64,AAAA"})
    assert r.status_code == 400 and "image" in r.json()["error"]
    r = await harness.client.post("/v1/inference/org/unknown", json={"inputs": ["x"]})
    assert r.status_code == 404 and "does not exist" in r.json()["error"]
    r = await harness.client.post(URL, json={"inputs": ["x"]}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json() == {"error": "Invalid API token"}
