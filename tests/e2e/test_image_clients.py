"""Images through the clients people use, against `inferd serve` on the default catalog (its tiny
random-weight pipeline): the seed's openai snippet unchanged saves a PNG; images.edit and
images.create_variation from the openai SDK; native text-to-image from curl."""

from __future__ import annotations

import base64
import io
import json

import pytest
from openai import OpenAI
from PIL import Image

from tests.e2e.test_clients import curl, has_curl  # noqa: F401


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=f"{server.base_url}/v1/openai", api_key=server.token, max_retries=0)


def test_the_seed_snippet_saves_a_png(client, tmp_path):
    response = client.images.generate(
        prompt="A photo of an astronaut riding a horse on Mars.",
        size="1024x1024",
        quality="standard",
        n=1,
    )
    b64_json = response.data[0].b64_json
    image_bytes = base64.b64decode(b64_json)
    image = Image.open(io.BytesIO(image_bytes))
    image.save(tmp_path / "output.png")
    saved = Image.open(tmp_path / "output.png")
    assert saved.format == "PNG" and saved.size == (1024, 1024)


def test_openai_sdk_edit_and_variation(client, tmp_path):
    source = Image.new("RGBA", (64, 64), (40, 160, 90, 255))
    source.paste((0, 0, 0, 0), (8, 8, 40, 40))
    path = tmp_path / "in.png"
    source.save(path)
    with path.open("rb") as f:
        edited = client.images.edit(image=f, prompt="a red door", size="256x256", n=2)
    assert len(edited.data) == 2
    assert Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json))).size == (256, 256)
    with path.open("rb") as f:
        varied = client.images.create_variation(image=f, size="256x256", response_format="url")
    assert varied.data[0].url.startswith("data:image/png;base64,")


def test_curl_native_text_to_image(server, has_curl):
    status, body = curl(f"{server.base_url}/v1/inference/tiny-sd-random", "-H", f"Authorization: Bearer {server.token}",
                        "-H", "Content-Type: application/json",
                        "-d", json.dumps({"prompt": "a boat", "width": 128, "height": 64, "seed": 5}))
    assert status == 200 and body["seed"] == 5 and len(body["nsfw_content_detected"]) == 1
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0].split(",", 1)[1])))
    assert image.size == (128, 64)
    status, body = curl(f"{server.base_url}/v1/openai/images/generations", "-H", f"Authorization: Bearer {server.token}",
                        "-H", "Content-Type: application/json", "-d", json.dumps({"prompt": "x", "n": 100}))
    assert status == 400 and body["error"]["param"] == "n"
