import base64

import numpy as np

from inferd.serving.embeddings import EmbedQuery, _encode, _postprocess


def unit_rows(n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_dimensions_cut_and_renormalise_when_the_model_normalises():
    v = unit_rows(3, 16)
    out = _postprocess(v, EmbedQuery("m", ["a"] * 3, dimensions=4), normalized=True)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, v[:, :4] / np.linalg.norm(v[:, :4], axis=1, keepdims=True), rtol=1e-5)


def test_raw_outputs_stay_raw_unless_normalize_is_asked():
    v = unit_rows(2, 8) * 3
    np.testing.assert_allclose(_postprocess(v, EmbedQuery("m", ["a"] * 2), normalized=False), v)
    out = _postprocess(v, EmbedQuery("m", ["a"] * 2, normalize=True), normalized=False)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_base64_is_little_endian_float32():
    v = np.array([1.0, -2.5, 3.25], dtype=np.float32)
    decoded = np.frombuffer(base64.b64decode(_encode(v, "base64")), dtype="<f4")
    np.testing.assert_array_equal(decoded, v)
    assert _encode(v, None) is v and _encode(v, "float") is v
