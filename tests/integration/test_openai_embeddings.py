"""OpenAI-compatible embeddings, in process (httpx -> ASGI app with the real MiniLM)."""

import base64

import numpy as np
import pytest

from tests.conftest import MINILM

URL = "/v1/openai/embeddings"


async def embed(client, **body):
    return await client.post(URL, json={"model": MINILM, **body})


async def test_a_string_gives_one_float_embedding_with_usage_and_cost(harness, st_model):
    r = await embed(harness.client, input="The quick brown fox")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == MINILM
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    vector = np.array(body["data"][0]["embedding"], dtype=np.float32)
    np.testing.assert_allclose(vector, st_model.encode("The quick brown fox"), atol=1e-5)
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] == 6
    assert usage["estimated_cost"] == pytest.approx(6 * 0.0000005 / 100)
    assert r.headers["x-request-id"]


async def test_base64_is_little_endian_float32(harness):
    floats = (await embed(harness.client, input=["a", "b"])).json()["data"]
    packed = (await embed(harness.client, input=["a", "b"], encoding_format="base64")).json()["data"]
    for f, p in zip(floats, packed, strict=True):
        decoded = np.frombuffer(base64.b64decode(p["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, f["embedding"], rtol=1e-6)


async def test_lists_keep_their_order(harness, st_model):
    texts = ["first", "a much longer second sentence about the weather", "third"]
    data = (await embed(harness.client, input=texts)).json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    np.testing.assert_allclose([d["embedding"] for d in data], st_model.encode(texts), atol=1e-5)


async def test_token_ids_are_accepted_as_one_list_or_many(harness, st_model):
    ids = st_model.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    one = (await embed(harness.client, input=ids)).json()
    many = (await embed(harness.client, input=[ids, ids])).json()
    text = (await embed(harness.client, input="hello world")).json()
    assert len(one["data"]) == 1 and len(many["data"]) == 2
    np.testing.assert_allclose(one["data"][0]["embedding"], text["data"][0]["embedding"], atol=1e-6)


async def test_dimensions_shorten_and_renormalise(harness):
    body = (await embed(harness.client, input="hello", dimensions=64)).json()
    vector = np.array(body["data"][0]["embedding"])
    assert vector.shape == (64,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, rel=1e-5)


async def test_the_v1_route_and_aliases_work_too(harness):
    r = await harness.client.post("/v1/embeddings", json={"model": "default", "input": "hi"})
    assert r.status_code == 200 and r.json()["model"] == MINILM


async def test_unknown_fields_are_ignored(harness):
    r = await embed(harness.client, input="hi", user="u1", service_tier="default", extra_thing=1)
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": []}, 400, "input"),
        ({"input": ""}, 400, "input"),
        ({"input": ["ok", ""]}, 400, "input"),
        ({"input": 42}, 400, "input"),
        ({"input": ["a", 1]}, 400, "input"),
        ({"input": [[]]}, 400, "input"),
        ({"input": [999999]}, 400, "input"),
        ({"input": "x", "dimensions": 385}, 400, "dimensions"),
        ({"input": "x", "dimensions": 0}, 400, "dimensions"),
        ({"input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
        ({"input": ["x"] * 2049}, 413, "input"),
    ],
)
async def test_bad_input_gets_a_clear_4xx_in_openai_shape(harness, body, status, param):
    r = await embed(harness.client, **body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_missing_model_and_unknown_model(harness):
    r = await harness.client.post(URL, json={"input": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = await harness.client.post(URL, json={"model": "org/nope", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


async def test_malformed_json_is_a_400(harness):
    r = await harness.client.post(URL, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]["message"]


async def test_tokens_are_required_and_checked(harness):
    r = await harness.client.post(URL, json={"model": MINILM, "input": "x"}, headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await harness.client.post(
        URL, json={"model": MINILM, "input": "x"}, headers={"Authorization": "Bearer inferd_wrong"}
    )
    assert r.status_code == 401 and r.json()["error"]["message"] == "Invalid API token"


async def test_models_list_has_metadata_and_state(harness):
    body = (await harness.client.get("/v1/openai/models")).json()
    card = next(m for m in body["data"] if m["id"] == MINILM)
    assert card["object"] == "model"
    meta = card["metadata"]
    assert meta["status"] == "ready" and meta["task"] == "embeddings"
    assert meta["context_length"] == 256 and meta["pricing"]["type"] == "input_tokens"


async def test_an_unknown_route_is_a_404_in_shape(harness):
    r = await harness.client.get("/v1/openai/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
