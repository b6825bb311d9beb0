"""The text-task backends against transformers' own pipelines and forward passes, on tiny
random-weight BERT heads (MiniLM's WordPiece tokenizer) and a tiny BART: text-classification
scores and fill-mask candidates equal the pipelines'; token-classification entities equal the
pipeline's for every aggregation strategy, with offsets that slice the input (non-ASCII text
included); question-answering finds the span a brute-force search finds; text2text greedy output
equals ``generate`` on the input alone, whatever else shares its batch."""

from __future__ import annotations

import numpy as np
import pytest

from inferd.backends.seq2seq import GenerationParams, Seq2SeqBackend, Text2TextInput
from inferd.backends.text_tasks import QuestionInput, softmax
from inferd.backends.token_labels import STRATEGIES
from inferd.backends.transformers_text import TransformersTextBackend
from inferd.catalog.spec import ModelSpec
from tests.conftest import TEST_CACHE
from tests.text import build_tiny_seq2seq, build_tiny_text_model

ROOT = TEST_CACHE / "text"
SENTENCES = ["Tim Cook leads Apple from Cupertino, California.", "Zoë Saldaña met François in São Paulo!",
             "short", "Hugging Face's tokenizers split unbelievably long words into pieces."]


def make(cls, task: str, source, **limits):
    spec = ModelSpec(id=f"test/{task}", task=task, backend="x", source=str(source), limits=limits)
    backend = cls(spec, str(source), {}, threads=2)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def built(minilm_path):
    return {task: build_tiny_text_model(task, minilm_path, ROOT / f"tiny-{task}", seed=3)
            for task in ("text-classification", "token-classification", "fill-mask", "question-answering")}


def pipe(task: str, path):
    from transformers import pipeline

    return pipeline(task, model=str(path), device="cpu")


def test_classification_scores_equal_the_pipelines(built):
    backend = make(TransformersTextBackend, "text-classification", built["text-classification"])
    rows = backend.forward([t.ids for t in backend.tokenize(SENTENCES)])
    expected = pipe("text-classification", built["text-classification"])(SENTENCES, top_k=None)
    for row, want in zip(rows, expected, strict=True):
        got = backend.labelled(row, None)
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)
        assert backend.labelled(row, 1) == got[:1]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_entities_equal_the_pipelines(built, strategy):
    backend = make(TransformersTextBackend, "token-classification", built["token-classification"])
    tokenized = backend.tokenize(SENTENCES)
    rows = backend.forward([t.ids for t in tokenized])  # one batch: padding must change nothing
    ner = pipe("token-classification", built["token-classification"])
    for text, row, piece in zip(SENTENCES, rows, tokenized, strict=True):
        got = backend.entities(text, row, piece.detail, strategy)
        want = ner(text, aggregation_strategy=strategy)
        key = "entity" if strategy == "none" else "entity_group"
        assert [(g[key], g["start"], g["end"]) for g in got] == [(w[key], w["start"], w["end"]) for w in want]
        assert np.allclose([g["score"] for g in got], [float(w["score"]) for w in want], atol=1e-5)
        assert all(g["word"] == text[g["start"]:g["end"]] for g in got)
        if strategy == "none":
            assert [g["index"] for g in got] == [w["index"] for w in want]


def test_entities_offsets_slice_non_ascii_text_back(built):
    backend = make(TransformersTextBackend, "token-classification", built["token-classification"])
    text = "Ærøskøbing — 東京 and Zoë's café"
    piece = backend.tokenize([text])[0]
    spans = [s for s in piece.detail.spans if s is not None]
    assert spans and all(0 <= a < b <= len(text) for a, b in spans)
    # every character that is not a space lies in some token's span (the uncased tokenizer strips accents
    # from the ids, never from the offsets)
    covered = {i for a, b in spans for i in range(a, b)}
    assert {i for i, c in enumerate(text) if not c.isspace()} <= covered


def test_fill_mask_equals_the_pipeline(built):
    backend = make(TransformersTextBackend, "fill-mask", built["fill-mask"])
    texts = ["Paris is the [MASK] of France.", "I [MASK] you", "[MASK]"]
    tokenized = backend.tokenize(texts)
    rows = backend.forward([t.ids for t in tokenized])
    fill = pipe("fill-mask", built["fill-mask"])
    for text, row, piece in zip(texts, rows, tokenized, strict=True):
        got = backend.fills(row, piece.detail, 5)
        want = fill(text, top_k=5)
        assert [g["token"] for g in got] == [w["token"] for w in want]
        assert [g["token_str"] for g in got] == [w["token_str"] for w in want]
        assert [g["sequence"] for g in got] == [w["sequence"] for w in want]
        assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)


def test_fill_mask_past_the_context_is_marked(built):
    backend = make(TransformersTextBackend, "fill-mask", built["fill-mask"], context_length=16)
    piece = backend.tokenize(["word " * 40 + "[MASK]"])[0]
    assert piece.detail.position is None and len(piece.ids) == 16 and piece.original_length > 16


def test_question_answering_finds_the_best_span(built):
    backend = make(TransformersTextBackend, "question-answering", built["question-answering"])
    context = "The quick brown fox jumped over the lazy dog near São Paulo."
    inputs = [QuestionInput("Who jumped?", context), QuestionInput("Where?", context[:20])]
    tokenized = backend.tokenize(inputs)
    rows = backend.forward([t.ids for t in tokenized])
    alone = backend.forward([tokenized[0].ids])[0]
    assert np.allclose(rows[0], alone, atol=1e-5)  # the shorter input's padding changes nothing
    detail = tokenized[0].detail
    got = backend.answers(rows[0], detail, context, top_k=3, max_answer_len=4)
    # brute force: every span of at most 4 context tokens, scored as p(start) * p(end)
    start = softmax(rows[0][detail.first : detail.last + 1, 0].astype(np.float64))
    end = softmax(rows[0][detail.first : detail.last + 1, 1].astype(np.float64))
    spans = sorted(((start[s] * end[e], s, e) for s in range(len(start)) for e in range(s, min(s + 4, len(end)))),
                   reverse=True)[:3]
    assert [(g["start"], g["end"]) for g in got] == [(detail.spans[s][0], detail.spans[e][1]) for _, s, e in spans]
    assert np.allclose([g["score"] for g in got], [p for p, _, _ in spans])
    assert all(g["answer"] == context[g["start"]:g["end"]] and g["answer"] for g in got)


def test_text2text_batches_equal_each_input_alone(minilm_path):
    import torch

    path = build_tiny_seq2seq(minilm_path, ROOT / "tiny-bart", seed=5)
    backend = make(Seq2SeqBackend, "text2text-generation", path)
    short, sampled = GenerationParams(max_new_tokens=6), GenerationParams(max_new_tokens=5, temperature=0.8)
    inputs = [Text2TextInput("translate english to german: hello", short),
              Text2TextInput("a much longer input that needs padding in the batch " * 3, short),
              Text2TextInput("sampled", sampled)]
    tokenized = backend.tokenize(inputs)
    rows = backend.forward([t.ids for t in tokenized])
    for piece, (text, made, tokens) in zip(tokenized[:2], rows[:2], strict=True):
        with torch.inference_mode():
            out = backend.model.generate(input_ids=torch.tensor([list(piece.ids)]), max_new_tokens=6, do_sample=False)
        assert text == backend.tokenizer.decode(out[0], skip_special_tokens=True)
        assert 0 < made <= 6 and tokens == len(piece.ids)
    assert rows[2][1] <= 5
