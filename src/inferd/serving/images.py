"""Image generation for every dialect: OpenAI's ``/images/generations``, ``/edits`` (inpainting)
and ``/variations`` (image to image), and DeepInfra's native text-to-image.

Requests are checked here (sizes, counts, steps, the uploaded images) before they reach the
engine; uploaded images are decoded off the event loop with Pillow's decompression-bomb guard and
a pixel limit of their own. Cost is in image units: an image at the pricing's default width,
height and step count is one unit, others in proportion (``width x height x steps``).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from dataclasses import dataclass, field

from inferd.backends.base import ImageBatchKey, ImageRequest
from inferd.catalog import ModelRef, Task, Units, Viewer
from inferd.catalog.pricing import ImageUnitsPricing
from inferd.engine.images import ImageModel, Picture
from inferd.engine.pool import ModelPool
from inferd.errors import InputTooLarge, InvalidRequest, UnsupportedInput
from inferd.serving.context import RequestContext
from inferd.serving.image_inputs import decode_image
from inferd.serving.metering import Charge, Meter, inference_status
from inferd.settings import Settings

MAX_PROMPT_CHARACTERS = 4000
MAX_STEPS = 150
VARIATION_STRENGTH = 0.75  # how far a variation strays from its image


@dataclass(slots=True)
class ImageQuery:
    model: str | None  # None: the catalog's default text-to-image model
    prompt: str = ""
    n: int = 1
    size: str | None = None  # "WIDTHxHEIGHT" or "auto" (OpenAI); or width/height
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    quality: str | None = None  # OpenAI: low / standard / medium / hd / high / auto
    guidance: float | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    scheduler: str | None = None
    mode: str = "text"  # text, image (variations), inpaint (edits)
    image: bytes | None = None
    mask: bytes | None = None
    strength: float | None = None
    version: str | None = None


@dataclass(slots=True)
class Generated:
    pictures: list[Picture]
    seed: int
    prompt: str
    prompt_tokens: int
    charge: Charge
    created: int = field(default_factory=lambda: int(time.time()))


class ImageService:
    def __init__(self, pool: ModelPool, meter: Meter, settings: Settings):
        self._pool = pool
        self._meter = meter
        self.max_images = settings.max_images_per_request
        self.max_side = settings.max_image_side
        self.max_input_pixels = settings.max_image_pixels

    def engine(self, model: str | None, viewer: Viewer, version: str | None = None) -> ImageModel:
        engine = self._pool.get(model or "default", version, Task.TEXT_TO_IMAGE, viewer)
        assert isinstance(engine, ImageModel)
        return engine

    async def generate(self, query: ImageQuery, ctx: RequestContext) -> Generated:
        engine = self.engine(query.model, ctx.viewer, query.version)
        await engine.ready()
        key, request = await self._check(query, engine)
        units = self._units(engine.ref, key, request, engine.backend.prompt_tokens(request.prompt))
        async with self._meter.track(ctx, engine.ref) as metered:
            pictures = await engine.generate(key, request)
            charge = metered.charge(units)
        return Generated(pictures, request.seed, request.prompt, units.input_tokens, charge)

    # ------------------------------------------------------------------ checks
    async def _check(self, query: ImageQuery, engine: ImageModel) -> tuple[ImageBatchKey, ImageRequest]:
        backend = engine.backend
        if query.mode not in backend.modes:
            what = {"image": "image variations (image to image)", "inpaint": "image edits (inpainting)"}[query.mode]
            raise UnsupportedInput(f"model {engine.name} cannot do {what}", param="model")
        prompt = query.prompt if isinstance(query.prompt, str) else ""
        if query.mode != "image" and not prompt.strip():
            raise InvalidRequest("prompt must not be empty", param="prompt")
        if len(prompt) > MAX_PROMPT_CHARACTERS or len(query.negative_prompt or "") > MAX_PROMPT_CHARACTERS:
            raise InputTooLarge(f"a prompt may be at most {MAX_PROMPT_CHARACTERS} characters", param="prompt")
        if not 1 <= query.n <= self.max_images:
            raise InvalidRequest(f"n must be between 1 and {self.max_images}", param="n")
        width, height = self._size(query, backend)
        steps = query.steps or _quality_steps(query.quality, backend.default_steps)
        if not 1 <= steps <= MAX_STEPS:
            raise InvalidRequest(f"num_inference_steps must be between 1 and {MAX_STEPS}", param="num_inference_steps")
        guidance = backend.default_guidance if query.guidance is None else query.guidance
        if not 0 <= guidance <= 50:
            raise InvalidRequest("guidance_scale must be between 0 and 50", param="guidance_scale")
        if query.scheduler is not None and query.scheduler not in backend.schedulers:
            raise InvalidRequest(f"unknown scheduler {query.scheduler[:80]!r}; model {engine.name} takes "
                                 f"{', '.join(backend.schedulers)}", param="scheduler")
        strength = query.strength if query.strength is not None else (VARIATION_STRENGTH if query.mode == "image" else 1.0)
        if not 0 < strength <= 1:
            raise InvalidRequest("strength must be in (0, 1]", param="strength")
        seed = secrets.randbelow(2**32) if query.seed is None else query.seed
        if not 0 <= seed < 2**63:
            raise InvalidRequest("seed must be between 0 and 2**63 - 1", param="seed")
        image = mask = None
        if query.mode != "text":
            if not query.image:
                raise InvalidRequest("image is required", param="image")
            image, mask = await asyncio.to_thread(self._inputs, query, width, height)
        key = ImageBatchKey(query.mode, width, height, steps, float(guidance), query.scheduler,
                            strength if query.mode != "text" else 1.0)
        request = ImageRequest(prompt, query.n, seed, query.negative_prompt or None, image, mask)
        return key, request

    def _size(self, query: ImageQuery, backend) -> tuple[int, int]:
        width, height = query.width, query.height
        if query.size and query.size != "auto":
            w, sep, h = query.size.lower().partition("x")
            if not (sep and w.isdigit() and h.isdigit() and len(query.size) <= 11):
                raise InvalidRequest(f"size must look like 1024x1024, not {query.size[:20]!r}", param="size")
            width, height = int(w), int(h)
        width = backend.default_size[0] if width is None else width
        height = backend.default_size[1] if height is None else height
        step = backend.size_multiple
        for name, value in (("width", width), ("height", height)):
            if not step <= value <= self.max_side:
                raise InvalidRequest(f"{name} must be between {step} and {self.max_side}", param="size")
            if value % step:
                raise InvalidRequest(f"{name} must be a multiple of {step} (it is {value})", param="size")
        return width, height

    def _inputs(self, query: ImageQuery, width: int, height: int):
        """The uploaded image (and mask) at the output size; for edits, the mask: white where to paint."""
        from PIL import Image

        image = decode_image(query.image, self.max_input_pixels, "image")
        if query.mode != "inpaint":
            return image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), None
        if query.mask:
            alpha = _alpha(decode_image(query.mask, self.max_input_pixels, "mask"))
        else:
            alpha = _alpha(image)
        if alpha is None:
            raise InvalidRequest("edits need a mask, or an image with transparent areas to paint", param="mask")
        mask = alpha.point(lambda a: 255 if a == 0 else 0).resize((width, height), Image.Resampling.NEAREST)
        return image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), mask

    @staticmethod
    def _units(ref: ModelRef, key: ImageBatchKey, request: ImageRequest, tokens: int) -> Units:
        pricing = ref.spec.pricing
        if isinstance(pricing, ImageUnitsPricing):
            base = pricing.default_width * pricing.default_height * pricing.default_iterations
            per_image = round(key.width * key.height * key.steps / base, 6)
        else:
            per_image = 1.0
        return Units(input_tokens=tokens, images=round(per_image * request.count, 6))


def _quality_steps(quality: str | None, default: int) -> int:
    """OpenAI's ``quality`` as denoising steps: low half, hd/high twice the model's default."""
    factor = {"low": 0.5, "hd": 2.0, "high": 2.0}.get((quality or "").lower(), 1.0)
    return max(1, round(default * factor))


def _alpha(image):
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return None


def _b64(picture: Picture) -> str:
    return base64.b64encode(picture.png).decode()


def data_url(picture: Picture) -> str:
    return "data:image/png;base64," + _b64(picture)


def openai_body(generated: Generated, response_format: str) -> dict:
    data = []
    for picture in generated.pictures:
        item = {"url": data_url(picture)} if response_format == "url" else {"b64_json": _b64(picture)}
        data.append({**item, "revised_prompt": generated.prompt})
    tokens = generated.prompt_tokens
    return {
        "created": generated.created,
        "data": data,
        "usage": {"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens,
                  "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0},
                  "estimated_cost": generated.charge.cost_usd},
    }


def native_body(generated: Generated, ctx: RequestContext) -> dict:
    return {
        "images": [data_url(p) for p in generated.pictures],
        "nsfw_content_detected": [p.nsfw for p in generated.pictures],
        "seed": generated.seed,
        "request_id": ctx.request_id,
        "inference_status": inference_status(generated.charge, generated.prompt_tokens),
    }
