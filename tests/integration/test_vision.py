"""Image understanding in process: image classification (tiny ViT; the shipped EfficientNet-Lite0
on a real photograph), zero-shot image classification (tiny CLIP), object detection (tiny YOLOS),
image embeddings on Infinity's /embeddings (modality image) and the native route, as JSON with
data URLs and as multipart uploads; images from many clients share batches; bad images and image
URLs (not fetched by default) in each dialect's error shape."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from inferd.backends.base import ImageInput
from inferd.catalog import load_catalog
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import TEST_CACHE, make_settings, start_app
from tests.unit.serving.test_images import bomb_png
from tests.vision import build_tiny_clip, build_tiny_vit_classifier, build_tiny_yolos, encoded, noise, photo


def data_url(image, fmt="PNG") -> str:
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(encoded(image, fmt)).decode()


@pytest.fixture(scope="module")
async def app(tmp_path_factory):
    root = TEST_CACHE / "vision"
    clip, vit, yolos = (build_tiny_clip(root / "tiny-clip"), build_tiny_vit_classifier(root / "tiny-vit"),
                        build_tiny_yolos(root / "tiny-yolos"))
    specs = [
        ModelSpec(id="test/tiny-clip", task="embeddings", backend="clip", source=str(clip)),
        ModelSpec(id="test/tiny-clip-labels", task="zero-shot-image-classification", backend="clip", source=str(clip)),
        ModelSpec(id="test/tiny-vit", task="image-classification", backend="image-classifier", source=str(vit)),
        ModelSpec(id="test/tiny-yolos", task="object-detection", backend="object-detector", source=str(yolos)),
        next(s for s in load_catalog() if s.id == "google/efficientnet-lite0"),
    ]
    async for h in start_app(make_settings(tmp_path_factory.mktemp("vision")), Catalog(specs)):
        yield h


async def test_image_classification_json_and_multipart(app):
    r = await app.client.post("/v1/inference/test/tiny-vit", json={"image": data_url(noise(50, 40))})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["label"] for x in body["results"]] and {x["label"] for x in body["results"]} == {"cat", "dog", "bird"}
    assert abs(sum(x["score"] for x in body["results"]) - 1) < 1e-5 and body["inference_status"]["status"] == "succeeded"
    r = await app.client.post("/v1/inference/test/tiny-vit", files={"image": ("a.jpg", encoded(noise(50, 40), "JPEG"))},
                              data={"top_k": "1"})
    assert r.status_code == 200 and len(r.json()["results"]) == 1


async def test_efficientnet_names_a_photograph(app):
    r = await app.client.post("/v1/inference/google/efficientnet-lite0",
                              files={"image": ("china.jpg", encoded(photo("china.jpg"), "JPEG"))})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5 and results[0]["score"] > results[-1]["score"]
    engine = app.state.pool.get("google/efficientnet-lite0")
    expected = engine.backend.forward([engine.backend.tokenize([ImageInput(photo("china.jpg"))])[0].ids])[0]
    assert results[0]["label"] == engine.backend.labels[int(np.argmax(expected))]


async def test_zero_shot(app):
    image = noise(32, 32, seed=9)
    r = await app.client.post("/v1/inference/test/tiny-clip-labels",
                              json={"image": data_url(image), "candidate_labels": ["a cat", "a dog", "a car"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert sorted(x["label"] for x in results) == ["a car", "a cat", "a dog"]
    assert abs(sum(x["score"] for x in results) - 1) < 1e-5
    assert [x["score"] for x in results] == sorted((x["score"] for x in results), reverse=True)
    r = await app.client.post("/v1/inference/test/tiny-clip-labels",
                              files={"image": ("x.png", encoded(image))}, data={"candidate_labels": ["a cat", "a dog"]})
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    r = await app.client.post("/v1/inference/test/tiny-clip-labels", json={"image": data_url(image), "candidate_labels": []})
    assert r.status_code == 400


async def test_object_detection(app):
    r = await app.client.post("/v1/inference/test/tiny-yolos", json={"image": data_url(noise(120, 80)), "threshold": 0})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5
    for found in results:
        assert found["label"] in ("cat", "dog", "bird") and set(found["box"]) == {"xmin", "ymin", "xmax", "ymax"}
    r = await app.client.post("/v1/inference/test/tiny-yolos", json={"image": data_url(noise(120, 80)), "threshold": 1})
    assert r.json()["results"] == []


async def test_image_embeddings_on_infinity_and_native(app):
    images = [noise(32, 32, seed=s) for s in range(3)]
    engine = app.state.pool.get("test/tiny-clip")
    expected = engine.backend.forward([t.ids for t in engine.backend.tokenize([ImageInput(i) for i in images])])
    r = await app.client.post("/embeddings", json={"model": "test/tiny-clip", "modality": "image",
                                                   "input": [data_url(i) for i in images]})
    assert r.status_code == 200, r.text
    body = r.json()
    got = np.array([d["embedding"] for d in body["data"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert body["usage"]["prompt_tokens"] == 3 * engine.backend.image_tokens
    # plain base64 too, and texts into the same space
    r = await app.client.post("/embeddings", json={"model": "test/tiny-clip", "modality": "image",
                                                   "input": base64.b64encode(encoded(images[0])).decode()})
    np.testing.assert_allclose(r.json()["data"][0]["embedding"], expected[0], atol=1e-5)
    r = await app.client.post("/v1/inference/test/tiny-clip", json={"inputs": ["a cat"], "image": data_url(images[1])})
    assert r.status_code == 200, r.text
    vectors = r.json()["embeddings"]
    assert len(vectors) == 2
    np.testing.assert_allclose(vectors[1], expected[1], atol=1e-5)
    r = await app.client.post("/v1/inference/test/tiny-clip", files={"image": ("a.png", encoded(images[2]))})
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 1
    np.testing.assert_allclose(r.json()["embeddings"][0], expected[2], atol=1e-5)


async def test_many_clients_share_batches_and_get_their_own_answers(app):
    images = [noise(32, 32, seed=100 + i) for i in range(16)]
    engine = app.state.pool.get("test/tiny-vit")
    expected = engine.backend.forward([t.ids for t in engine.backend.tokenize([ImageInput(i) for i in images])])
    batches = []
    original = engine.backend.forward

    def counting(batch):
        batches.append(len(batch))
        return original(batch)

    engine.backend.forward = counting
    try:
        async def one(image):
            r = await app.client.post("/v1/inference/test/tiny-vit", json={"image": data_url(image), "top_k": None})
            assert r.status_code == 200, r.text
            return {x["label"]: x["score"] for x in r.json()["results"]}

        answers = await asyncio.gather(*(one(i) for i in images))
    finally:
        engine.backend.forward = original
    for answer, logits in zip(answers, expected, strict=True):
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        assert answer == pytest.approx({"cat": scores[0], "dog": scores[1], "bird": scores[2]}, abs=1e-5)
    assert max(batches) > 1  # requests shared forward passes


@pytest.mark.parametrize("image, status", [
    ("data:image/png;base64,aGVsbG8gd29ybGQ=", 400),  # not an image
    ("not base64 at all!", 400),
    ("https://example.com/cat.png", 400),  # URLs are not fetched unless fetch_image_urls is on
    ("data:image/png;base64," + base64.b64encode(bomb_png(30000, 30000)).decode(), 413),
    ("data:image/jpeg;base64," + base64.b64encode(encoded(noise(64, 64), "JPEG")[:300]).decode(), 400),
])
async def test_bad_images(app, image, status):
    r = await app.client.post("/v1/inference/test/tiny-vit", json={"image": image})
    assert r.status_code == status, r.text
    assert "image" in r.json()["error"]
    r = await app.client.post("/embeddings", json={"model": "test/tiny-clip", "modality": "image", "input": [image]})
    assert r.status_code == status and r.json()["error"]["param"] == "image"


async def test_wrong_modality(app):
    r = await app.client.post("/embeddings", json={"model": "test/tiny-vit", "input": ["x"]})
    assert r.status_code == 404  # a classifier is not an embedding model
    r = await app.client.post("/v1/inference/test/tiny-vit", json={"image": 5})
    assert r.status_code == 400
    r = await app.client.post("/v1/inference/test/tiny-yolos", json={"threshold": 0.5})
    assert r.status_code == 422
