"""The vision tasks from curl and LiteLLM against `inferd serve` with a catalog of tiny random
vision models and the shipped EfficientNet-Lite0: image classification, zero-shot image
classification, object detection (multipart uploads and data URLs), image embeddings through
LiteLLM's `infinity/` provider."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tests.conftest import TEST_CACHE
from tests.e2e.conftest import RemoteServer, default_models, write_catalog
from tests.e2e.test_clients import curl, has_curl  # noqa: F401
from tests.vision import build_tiny_clip, build_tiny_vit_classifier, build_tiny_yolos, encoded, noise, photo


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory):
    root = TEST_CACHE / "vision"
    clip, vit, yolos = (build_tiny_clip(root / "tiny-clip"), build_tiny_vit_classifier(root / "tiny-vit"),
                        build_tiny_yolos(root / "tiny-yolos"))
    models = default_models("image-classification") + [
        {"id": "test/tiny-clip", "task": "embeddings", "backend": "clip", "source": str(clip)},
        {"id": "test/tiny-clip-labels", "task": "zero-shot-image-classification", "backend": "clip", "source": str(clip)},
        {"id": "test/tiny-vit", "task": "image-classification", "backend": "image-classifier", "source": str(vit)},
        {"id": "test/tiny-yolos", "task": "object-detection", "backend": "object-detector", "source": str(yolos)},
    ]
    work = tmp_path_factory.mktemp("vision-server")
    catalog = write_catalog(work / "catalog.yaml", models)
    server = RemoteServer(work, "--catalog", str(catalog)).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    where = tmp_path_factory.mktemp("images")
    (where / "china.jpg").write_bytes(encoded(photo("china.jpg"), "JPEG"))
    (where / "noise.png").write_bytes(encoded(noise(96, 64)))
    return where


def test_every_vision_task_from_curl(vision_server, files, has_curl):
    base, auth = vision_server.base_url, f"Authorization: Bearer {vision_server.token}"
    status, body = curl(f"{base}/v1/inference/google/efficientnet-lite0", "-H", auth, "-F", f"image=@{files / 'china.jpg'}")
    assert status == 200 and len(body["results"]) == 5 and body["request_id"]
    status, body = curl(f"{base}/v1/inference/test/tiny-vit", "-H", auth, "-F", f"image=@{files / 'noise.png'}",
                        "-F", "top_k=2")
    assert status == 200 and len(body["results"]) == 2
    status, body = curl(f"{base}/v1/inference/test/tiny-clip-labels", "-H", auth, "-F", f"image=@{files / 'noise.png'}",
                        "-F", "candidate_labels=a cat", "-F", "candidate_labels=a dog")
    assert status == 200 and sorted(x["label"] for x in body["results"]) == ["a cat", "a dog"]
    url = "data:image/png;base64," + base64.b64encode((files / "noise.png").read_bytes()).decode()
    status, body = curl(f"{base}/v1/inference/test/tiny-yolos", "-H", auth, "-H", "Content-Type: application/json",
                        "-d", json.dumps({"image": url, "threshold": 0}))
    assert status == 200 and len(body["results"]) == 5 and "box" in body["results"][0]
    (files / "note.txt").write_text("this is not an image")
    status, body = curl(f"{base}/v1/inference/test/tiny-vit", "-H", auth, "-F", f"image=@{files / 'note.txt'}")
    assert status == 400 and "image" in body["error"]


def test_litellm_infinity_image_embeddings(vision_server, files):
    import litellm

    url = "data:image/png;base64," + base64.b64encode((files / "noise.png").read_bytes()).decode()
    result = litellm.embedding(model="infinity/test/tiny-clip", input=[url, url], modality="image",
                               api_base=vision_server.base_url, api_key=vision_server.token)
    vectors = np.array([d["embedding"] for d in result.data])
    assert vectors.shape == (2, 16)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    text = litellm.embedding(model="infinity/test/tiny-clip", input=["a cat"], api_base=vision_server.base_url,
                             api_key=vision_server.token)
    assert len(text.data[0]["embedding"]) == 16
