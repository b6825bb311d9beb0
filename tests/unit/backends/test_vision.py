"""The image backends of the encoder engine against transformers' own forward passes, on tiny
random-weight CLIP, ViT and YOLOS models and the shipped EfficientNet-Lite0: rows equal what the
model computes alone, batches (mixed texts and images, images of different sizes) change nothing,
and EfficientNet-Lite0 knows a real photograph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inferd.backends.base import ImageInput
from inferd.backends.clip import ClipBackend
from inferd.backends.efficientnet import EfficientNetBackend
from inferd.backends.image_classifier import ImageClassifierBackend
from inferd.backends.object_detector import ObjectDetectorBackend
from inferd.catalog import load_catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import TEST_CACHE
from tests.vision import build_tiny_clip, build_tiny_vit_classifier, build_tiny_yolos, noise, photo


def make(cls, task, source, **options):
    spec = ModelSpec(id="test/model", task=task, backend="x", source=str(source), options=options)
    backend = cls(spec, str(source), options, threads=2)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def clip():
    return make(ClipBackend, "embeddings", build_tiny_clip(TEST_CACHE / "vision" / "tiny-clip"))


def test_clip_rows_are_the_models_embeddings(clip):
    images = [noise(40, 30, seed=1), noise(64, 64, seed=2)]
    inputs = ["a photo of a cat", ImageInput(images[0]), "a dog", ImageInput(images[1])]
    tokenized = clip.tokenize(inputs)
    assert tokenized[1].cost == clip.image_tokens == 17 and tokenized[0].cost is None
    rows = clip.forward([t.ids for t in tokenized])
    processed = clip.images.processor(images=images, return_tensors="pt")
    texts = clip.tokenizer(["a photo of a cat", "a dog"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = clip.model(input_ids=texts["input_ids"], attention_mask=texts["attention_mask"],
                         pixel_values=processed["pixel_values"])
    # the model's own forward normalises its embeddings; ours are the raw projections
    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    np.testing.assert_allclose(unit(rows[[0, 2]]), out.text_embeds.numpy(), atol=1e-5)
    np.testing.assert_allclose(unit(rows[[1, 3]]), out.image_embeds.numpy(), atol=1e-5)
    alone = clip.forward([tokenized[1].ids])
    np.testing.assert_allclose(alone[0], rows[1], atol=1e-5)
    scores = clip.zero_shot(rows[1], rows[[0, 2]])
    expected = torch.softmax(out.logits_per_image[0], dim=0).numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_image_classifier_logits_match_the_model():
    backend = make(ImageClassifierBackend, "image-classification",
                   build_tiny_vit_classifier(TEST_CACHE / "vision" / "tiny-vit"))
    assert backend.labels == ["cat", "dog", "bird"] and backend.dimensions == 3
    images = [noise(50, 20, seed=3), noise(32, 32, seed=4)]
    rows = backend.forward([t.ids for t in backend.tokenize([ImageInput(i) for i in images])])
    with torch.inference_mode():
        expected = backend.model(**backend.images.processor(images=images, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(rows, expected, atol=1e-5)
    with pytest.raises(Exception, match="takes images"):
        backend.tokenize(["text"])


def test_detector_batches_images_of_different_sizes_as_alone():
    backend = make(ObjectDetectorBackend, "object-detection", build_tiny_yolos(TEST_CACHE / "vision" / "tiny-yolos"))
    images = [noise(120, 60, seed=5), noise(64, 64, seed=6), noise(60, 120, seed=7)]
    pixels = [t.ids for t in backend.tokenize([ImageInput(i) for i in images])]
    assert len({p.shape for p in pixels}) == 3
    together = backend.forward(pixels)
    for i, p in enumerate(pixels):
        np.testing.assert_allclose(backend.forward([p])[0], together[i], atol=1e-5)
    found = backend.detections(together[0], 120, 60, threshold=0.0)
    assert len(found) == backend.queries == 5
    assert all(d["label"] in ("cat", "dog", "bird") and 0 <= d["score"] <= 1 for d in found)
    assert [d["score"] for d in found] == sorted((d["score"] for d in found), reverse=True)
    assert backend.detections(together[0], 120, 60, threshold=1.0) == []


def test_efficientnet_lite0_knows_a_photograph():
    spec = next(s for s in load_catalog() if s.id == "google/efficientnet-lite0")
    backend = EfficientNetBackend(spec, spec.default_version.source, dict(spec.options), threads=2)
    backend.load()
    assert len(backend.labels) == 1000 and backend.labels[281] == "tabby"
    rows = backend.forward([t.ids for t in backend.tokenize([ImageInput(photo("china.jpg")),
                                                             ImageInput(photo("flower.jpg"))])])
    top = [[backend.labels[i] for i in np.argsort(-row)[:5]] for row in rows]
    assert top[0][0] == "palace" and "monastery" in top[0], top[0]  # a Chinese temple's roofs
    assert top[1][0] == "daisy", top[1]  # a flower
