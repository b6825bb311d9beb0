"""Image classification with transformers (any ``AutoModelForImageClassification`` id or
directory: ViT, ConvNeXt, ResNet, EfficientNet, ...) on the encoder engine: rows are logits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inferd.backends.vision import ImageModelBackend, ImagePreprocessor, config_labels


class ImageClassifierBackend(ImageModelBackend):
    labels: list[str]
    multi_label: bool = False  # sigmoid per label instead of a softmax over them

    def load(self) -> None:
        import torch
        from transformers import AutoModelForImageClassification

        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.resolve()
        self.model = AutoModelForImageClassification.from_pretrained(str(path), dtype=torch.float32).eval()
        self.images = ImagePreprocessor(path)
        config = self.model.config
        self.labels = config_labels(config)
        self.multi_label = config.problem_type == "multi_label_classification"
        self.dimensions = len(self.labels)
        side = self.images(self.probe_input().image).shape[-1]
        self.image_tokens = self.context_length = max(1, (side // 16) ** 2)

    def forward(self, batch: Sequence) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(pixel_values=torch.from_numpy(np.stack(batch))).logits
        return logits.float().numpy()

    def close(self) -> None:
        self.model = None
