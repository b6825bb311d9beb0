"""The three reranker backends against the libraries' own scoring of the same pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inferd.backends.base import RerankPair
from inferd.backends.bi_encoder import BiEncoderBackend
from inferd.backends.cross_encoder import CrossEncoderBackend
from inferd.backends.lm_judge import LMJudgeBackend, judge_body, PREFIX, SUFFIX, INSTRUCTION
from inferd.catalog.spec import ModelSpec

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "The mitochondria is the powerhouse of the cell.",
        "Berlin is the capital of Germany, a country in Europe with a long history. " * 3, "France"]


def loaded(cls, path, task="reranker", **limits):
    spec = ModelSpec(id="m", task=task, backend="x", source=str(path), limits=limits)
    backend = cls(spec, str(path), {})
    backend.load()
    return backend


def pairs(docs=DOCS, instruction=None):
    return [RerankPair(QUERY, d, instruction) for d in docs]


def test_cross_encoder_matches_cross_encoder_predict_in_any_batch(tiny_cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    backend = loaded(CrossEncoderBackend, tiny_cross_encoder_dir)
    expected = CrossEncoder(str(tiny_cross_encoder_dir)).predict([(QUERY, d) for d in DOCS])
    ids = [t.ids for t in backend.tokenize(pairs())]
    together = backend.to_unit(backend.forward(ids)[:, 0])
    alone = np.array([backend.to_unit(backend.forward([i])[0, 0]) for i in ids])
    np.testing.assert_allclose(together, expected, atol=1e-5)
    np.testing.assert_allclose(alone, expected, atol=1e-5)


def test_cross_encoder_cuts_long_documents_to_the_context(tiny_cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    backend = loaded(CrossEncoderBackend, tiny_cross_encoder_dir, context_length=24)
    long = "word " * 500
    [tokenized] = backend.tokenize([RerankPair(QUERY, long)])
    assert len(tokenized.ids) == 24 and tokenized.original_length > 500
    reference = CrossEncoder(str(tiny_cross_encoder_dir), max_length=24).predict([(QUERY, long)])
    np.testing.assert_allclose(backend.to_unit(backend.forward([tokenized.ids])[:, 0]), reference, atol=1e-5)


def test_lm_judge_scores_are_the_yes_no_softmax_of_a_plain_forward(tiny_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backend = loaded(LMJudgeBackend, tiny_lm_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    instruction = "Find the document that answers the question"
    expected = []
    for pair in pairs(instruction=instruction):
        text = PREFIX + judge_body(pair, INSTRUCTION) + SUFFIX
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            last = model(input_ids=ids).logits[0, -1]
        expected.append(torch.stack([last[yes], last[no]]).softmax(-1)[0].item())
    ids = [t.ids for t in backend.tokenize(pairs(instruction=instruction))]
    together = backend.to_unit(backend.forward(ids)[:, 0])
    alone = np.array([backend.to_unit(backend.forward([i])[0, 0]) for i in ids])
    np.testing.assert_allclose(together, expected, atol=1e-5)
    np.testing.assert_allclose(alone, expected, atol=1e-5)
    # the instruction is part of the prompt: another one scores differently
    other = backend.to_unit(backend.forward([t.ids for t in backend.tokenize(pairs())])[:, 0])
    assert not np.allclose(other, together)


def test_bi_encoder_relevance_is_the_mapped_cosine(minilm_path, st_model):
    backend = loaded(BiEncoderBackend, minilm_path)
    assert backend.scoring == "cosine"
    vectors = backend.forward([t.ids for t in backend.tokenize([QUERY, *DOCS])])
    reference = st_model.encode([QUERY, *DOCS], normalize_embeddings=True)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    cosines = reference[1:] @ reference[0]
    relevance = backend.to_unit(cosines)
    assert ((0 <= relevance) & (relevance <= 1)).all() and int(np.argmax(relevance)) == 0
    np.testing.assert_allclose(relevance, (cosines + 1) / 2, atol=1e-6)


@pytest.mark.parametrize("token", ["yes", "no"])
def test_lm_judge_answer_tokens_are_single_tokens(tiny_lm_dir, token):
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(tiny_lm_dir).encode(token, add_special_tokens=False)) == 1
