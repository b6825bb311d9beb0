"""What the image models on the encoder engine share: preprocessing with the model's own image
processor (its slow, PIL-based one: no torchvision needed), and the base of models that take
images only (classifiers, detectors)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from inferd.backends.base import EncoderBackend, EncoderInput, ImageInput, Tokenized
from inferd.errors import UnsupportedInput


def config_labels(config) -> list[str]:
    """A transformers model's class names, in index order."""
    return [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]


def output_tensor(out):
    """transformers 5 returns model outputs from ``get_*_features``: the embedding is ``pooler_output``."""
    return out if hasattr(out, "numpy") else out.pooler_output


class ImagePreprocessor:
    """An image -> the model's pixel array [3, H, W] float32, by the checkpoint's image processor."""

    def __init__(self, path: Path):
        from transformers import AutoImageProcessor

        self.processor = AutoImageProcessor.from_pretrained(str(path), use_fast=False)

    def __call__(self, image: Image.Image) -> np.ndarray:
        pixels = self.processor(images=[image.convert("RGB")], return_tensors="np")["pixel_values"][0]
        return np.ascontiguousarray(pixels, dtype=np.float32)


class ImageModelBackend(EncoderBackend):
    """A model that takes images only; each weighs ``image_tokens`` in a batch. ``preprocess`` is
    the checkpoint's own image processor (``self.images``) unless a backend has its own."""

    modalities = frozenset({"image"})
    normalizes = False
    vocab_size = 0
    image_tokens: int
    images: ImagePreprocessor

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.images(image)

    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        out = []
        for x in inputs:
            if not isinstance(x, ImageInput):
                raise UnsupportedInput(f"model {self.spec.id} takes images, not text", param="input")
            out.append(Tokenized(self.preprocess(x.image), 1, cost=self.image_tokens))
        return out

    def probe_input(self) -> EncoderInput:
        rng = np.random.default_rng(0)
        return ImageInput(Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)))
