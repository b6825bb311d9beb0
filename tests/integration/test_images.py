"""Images in process, on the default catalog's tiny random-weight pipeline: OpenAI's
/images/generations (the seed's snippet, without a model), /edits and /variations; the native
text-to-image route (a fixed seed draws the same image twice); 8 clients at once each get their
own images; bad input in each dialect's error shape; the bill in image units."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from PIL import Image
from sqlalchemy import select

from inferd.accounts.models import UsageRecord
from inferd.catalog import Task, load_catalog
from inferd.catalog.catalog import Catalog
from tests.conftest import TEST_CACHE, make_settings, start_app
from tests.unit.serving.test_images import bomb_png, png

GENERATE = "/v1/openai/images/generations"
NATIVE = "/v1/inference/inferd/tiny-sd-random"


@pytest.fixture(scope="module")
async def app(tmp_path_factory):
    catalog = Catalog([s for s in load_catalog() if s.task is Task.TEXT_TO_IMAGE])
    settings = make_settings(tmp_path_factory.mktemp("images"), cache_dir=TEST_CACHE)
    async for h in start_app(settings, catalog):
        yield h


def decoded(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image


async def test_the_seed_snippet_without_a_model(app):
    r = await app.client.post(GENERATE, json={"prompt": "A photo of an astronaut riding a horse on Mars.",
                                              "size": "1024x1024", "quality": "standard", "n": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["created"], int) and len(body["data"]) == 1
    assert decoded(body["data"][0]["b64_json"]).size == (1024, 1024)
    assert body["data"][0]["revised_prompt"] == "A photo of an astronaut riding a horse on Mars."
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["estimated_cost"] > 0


async def test_n_size_and_url_format(app):
    r = await app.client.post(GENERATE, json={"prompt": "two cats", "model": "dall-e-3", "size": "128x64", "n": 2,
                                              "response_format": "url"})
    assert r.status_code == 200, r.text
    urls = [d["url"] for d in r.json()["data"]]
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)
    assert decoded(urls[0].split(",", 1)[1]).size == (128, 64)


async def test_native_fixed_seed_draws_the_same_image_twice(app):
    body = {"prompt": "a lighthouse at dusk", "width": 64, "height": 96, "num_inference_steps": 3, "seed": 1234,
            "num_images": 2, "negative_prompt": "fog", "guidance_scale": 5}
    first, second = [await app.client.post(NATIVE, json=body) for _ in range(2)]
    assert first.status_code == 200, first.text
    a, b = first.json(), second.json()
    assert a["seed"] == 1234 and len(a["images"]) == 2 and a["images"] == b["images"]
    assert a["images"][0] != a["images"][1]
    assert a["nsfw_content_detected"] in ([False, False], [True, True], [False, True], [True, False])
    assert a["inference_status"]["status"] == "succeeded" and a["inference_status"]["cost"] > 0
    assert decoded(a["images"][0].split(",", 1)[1]).size == (64, 96)
    other = (await app.client.post(NATIVE, json={**body, "seed": 99})).json()
    assert other["images"][0] != a["images"][0]
    unset = (await app.client.post(NATIVE, json={"prompt": "x", "width": 64, "height": 64})).json()
    assert isinstance(unset["seed"], int)


async def test_edits_and_variations(app):
    source = Image.new("RGBA", (64, 64), (20, 120, 200, 255))
    source.paste((0, 0, 0, 0), (16, 16, 48, 48))  # a transparent hole: where to paint
    out = io.BytesIO()
    source.save(out, format="PNG")
    r = await app.client.post("/v1/openai/images/edits", files={"image": ("in.png", out.getvalue(), "image/png")},
                              data={"prompt": "a window", "size": "64x64", "n": "2"})
    assert r.status_code == 200, r.text
    edited = [decoded(d["b64_json"]) for d in r.json()["data"]]
    assert len(edited) == 2 and edited[0].size == (64, 64)
    r = await app.client.post("/v1/openai/images/variations", files={"image": ("in.png", png(80, 80), "image/png")},
                              data={"size": "64x64"})
    assert r.status_code == 200, r.text
    assert decoded(r.json()["data"][0]["b64_json"]).size == (64, 64)
    # an image without transparency and no mask: nothing says where to paint
    r = await app.client.post("/v1/openai/images/edits", files={"image": ("in.png", png(64, 64), "image/png")},
                              data={"prompt": "x", "size": "64x64"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "mask"


async def test_eight_clients_at_once_each_get_their_own_images(app):
    async def one(i):
        r = await app.client.post(NATIVE, json={"prompt": f"picture {i}", "width": 64, "height": 64, "seed": i})
        assert r.status_code == 200, r.text
        return r.json()["images"][0]

    alone = await one(3)
    images = await asyncio.gather(*(one(i) for i in range(8)))
    assert len(set(images)) == 8
    seen = Image.open(io.BytesIO(base64.b64decode(images[3].split(",", 1)[1])))
    first = Image.open(io.BytesIO(base64.b64decode(alone.split(",", 1)[1])))
    diff = max(abs(a - b) for pa, pb in zip(seen.getdata(), first.getdata(), strict=True) for a, b in zip(pa, pb, strict=True))
    assert diff <= 2  # its seed drew the same image in a batch of 8 as alone


@pytest.mark.parametrize("body, status, param", [
    ({"prompt": "x", "size": "1000x1001"}, 400, "size"),
    ({"prompt": "x", "n": 100}, 400, "n"),
    ({"prompt": "", "size": "64x64"}, 400, "prompt"),
    ({"prompt": "x" * 5000, "size": "64x64"}, 413, "prompt"),
    ({"prompt": "x", "size": "64x64", "model": "no-such-model"}, 404, None),
    ({"prompt": 5}, 400, "prompt"),
])
async def test_bad_generations_are_openai_errors(app, body, status, param):
    r = await app.client.post(GENERATE, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and (param is None or error["param"] == param)


async def test_bad_native_requests_and_images(app):
    r = await app.client.post(NATIVE, json={"prompt": "x", "width": 63, "height": 64})
    assert r.status_code == 400 and "multiple of 8" in r.json()["error"]
    r = await app.client.post(NATIVE, json={"prompt": "x", "width": 64, "height": 64, "scheduler": "os.system"})
    assert r.status_code == 400 and "EulerDiscreteScheduler" in r.json()["error"]
    r = await app.client.post(NATIVE, json={"prompt": "x", "num_inference_steps": 100000})
    assert r.status_code == 400
    for image, status in ((b"not an image at all", 400), (bomb_png(30000, 30000), 413), (png(64, 64)[:60], 400)):
        r = await app.client.post("/v1/openai/images/variations", files={"image": ("x.png", image, "image/png")},
                                  data={"size": "64x64"})
        assert r.status_code == status, r.text
        assert r.json()["error"]["param"] == "image"
    # the server still draws
    assert (await app.client.post(NATIVE, json={"prompt": "x", "width": 64, "height": 64})).status_code == 200


async def test_the_bill_is_in_image_units(app):
    r = await app.client.post(NATIVE, json={"prompt": "a bill", "width": 512, "height": 512,
                                            "num_inference_steps": 5, "num_images": 2})
    assert r.status_code == 200
    await app.state.usage.flush()
    async with app.state.db.sessions() as session:
        row = await session.scalar(select(UsageRecord).where(UsageRecord.request_id == r.headers["x-request-id"]))
    assert row.pricing_type == "image_units" and row.images == pytest.approx(2 * 512 * 512 * 5 / (1024 * 1024 * 25))
    assert row.cost_nano_usd == round(row.images * 0.01 * 10_000_000)
    assert r.json()["inference_status"]["cost"] == row.cost_nano_usd / 1e9
