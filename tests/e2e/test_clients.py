"""Embeddings through the clients people already use: openai SDK, LiteLLM, curl."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from openai import OpenAI

from tests.conftest import MINILM

TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]


@pytest.fixture(scope="module")
def openai_client(server):
    return OpenAI(base_url=f"{server.base_url}/v1/openai", api_key=server.token, max_retries=0)


def cos(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_openai_sdk_default_base64(openai_client, st_model):
    # the SDK asks for base64 when the caller names no format, and decodes it
    result = openai_client.embeddings.create(model=MINILM, input=TEXTS)
    vectors = [d.embedding for d in result.data]
    np.testing.assert_allclose(vectors, st_model.encode(TEXTS), atol=1e-5)
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.4
    assert result.usage.prompt_tokens > 0


def test_openai_sdk_float(openai_client, st_model):
    result = openai_client.embeddings.create(model=MINILM, input="hello", encoding_format="float")
    np.testing.assert_allclose(result.data[0].embedding, st_model.encode("hello"), atol=1e-5)


def test_openai_sdk_errors_are_typed(openai_client, server):
    import openai

    with pytest.raises(openai.NotFoundError):
        openai_client.embeddings.create(model="org/absent", input="x")
    with pytest.raises(openai.BadRequestError):
        openai_client.embeddings.create(model=MINILM, input=[])
    bad = OpenAI(base_url=f"{server.base_url}/v1/openai", api_key="inferd_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model=MINILM, input="x")
    assert MINILM in [m.id for m in openai_client.models.list()]


def test_litellm_infinity_provider(server, st_model):
    import litellm

    result = litellm.embedding(
        model=f"infinity/{MINILM}", input=TEXTS, api_base=server.base_url, api_key=server.token
    )
    np.testing.assert_allclose([d["embedding"] for d in result.data], st_model.encode(TEXTS), atol=1e-5)


def test_litellm_openai_route(server, st_model):
    import litellm

    result = litellm.embedding(
        model=f"openai/{MINILM}", input=TEXTS, api_base=f"{server.base_url}/v1/openai", api_key=server.token
    )
    np.testing.assert_allclose([d["embedding"] for d in result.data], st_model.encode(TEXTS), atol=1e-5)


def curl(*args: str) -> tuple[int, dict]:
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, check=True
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


@pytest.fixture(scope="module")
def has_curl():
    assert shutil.which("curl"), "curl is part of this machine's image and of the documented examples"


def test_curl_native_and_openai(server, has_curl):
    auth = f"Authorization: Bearer {server.token}"
    status, body = curl(
        f"{server.base_url}/v1/inference/{MINILM}", "-H", auth, "-H", "Content-Type: application/json",
        "-d", json.dumps({"inputs": TEXTS}),
    )
    assert status == 200 and len(body["embeddings"]) == 3 and body["inference_status"]["status"] == "succeeded"
    status, body = curl(
        f"{server.base_url}/v1/inference/{MINILM}", "-H", auth, "-F", "inputs=hello", "-F", "inputs=world"
    )
    assert status == 200 and len(body["embeddings"]) == 2
    status, body = curl(
        f"{server.base_url}/v1/openai/embeddings", "-H", auth, "-H", "Content-Type: application/json",
        "-d", json.dumps({"model": MINILM, "input": "hello"}),
    )
    assert status == 200 and len(body["data"][0]["embedding"]) == 384
    status, body = curl(f"{server.base_url}/v1/openai/embeddings", "-d", "{}")
    assert status == 401
