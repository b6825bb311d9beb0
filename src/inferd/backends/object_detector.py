"""Object detection with DETR-style transformers models (``AutoModelForObjectDetection``: DETR,
YOLOS, ...: a set of box queries, each a class or "no object") on the encoder engine.

Images keep their aspect ratio (the model's image processor resizes them), so a batch is padded
to its largest image with a pixel mask where the model takes one (DETR); a model without one
(YOLOS) runs each size of image in a batch in its own pass. A row is every query's class
logits and box (centre x, centre y, width, height, relative to the image), flattened;
``detections`` turns one into boxes in the image's pixels.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np

from inferd.backends.vision import ImageModelBackend, ImagePreprocessor, config_labels


class ObjectDetectorBackend(ImageModelBackend):
    def load(self) -> None:
        import torch
        from transformers import AutoModelForObjectDetection

        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.resolve()
        self.model = AutoModelForObjectDetection.from_pretrained(str(path), dtype=torch.float32).eval()
        self.images = ImagePreprocessor(path)
        config = self.model.config
        self.labels = config_labels(config)
        self.takes_mask = "pixel_mask" in inspect.signature(self.model.forward).parameters
        probe = self.model(pixel_values=torch.from_numpy(self.images(self.probe_input().image)[None]))
        self.queries, self.classes = probe.logits.shape[1], probe.logits.shape[2]
        self.dimensions = self.queries * (self.classes + 4)
        self.image_tokens = self.context_length = 256

    def forward(self, batch: Sequence) -> np.ndarray:
        if self.takes_mask:  # one pass, padded to the largest image, the mask saying what is image
            return self._run(list(batch))
        out = np.empty((len(batch), self.dimensions), dtype=np.float32)
        shapes: dict[tuple, list[int]] = {}
        for i, pixels in enumerate(batch):  # without a mask, padding would change what it sees
            shapes.setdefault(pixels.shape, []).append(i)
        for rows in shapes.values():
            out[rows] = self._run([batch[i] for i in rows])
        return out

    def _run(self, batch: list) -> np.ndarray:
        import torch

        height = max(p.shape[1] for p in batch)
        width = max(p.shape[2] for p in batch)
        pixels = np.zeros((len(batch), 3, height, width), dtype=np.float32)
        mask = np.zeros((len(batch), height, width), dtype=np.int64)
        for i, p in enumerate(batch):
            pixels[i, :, : p.shape[1], : p.shape[2]] = p
            mask[i, : p.shape[1], : p.shape[2]] = 1
        kwargs = {"pixel_values": torch.from_numpy(pixels)}
        if self.takes_mask:
            kwargs["pixel_mask"] = torch.from_numpy(mask)
        with torch.inference_mode():
            out = self.model(**kwargs)
        logits = out.logits.float().numpy().reshape(len(batch), -1)
        boxes = out.pred_boxes.float().numpy().reshape(len(batch), -1)
        return np.concatenate([logits, boxes], axis=1)

    def detections(self, row: np.ndarray, width: int, height: int, threshold: float) -> list[dict]:
        """One image's objects scoring at least ``threshold``, best first, boxes in pixels."""
        split = self.queries * self.classes
        logits = row[:split].reshape(self.queries, self.classes)
        boxes = row[split:].reshape(self.queries, 4)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        found = []
        for query in range(self.queries):
            label = int(probs[query, :-1].argmax())  # the last class is "no object"
            score = float(probs[query, label])
            if score < threshold:
                continue
            cx, cy, w, h = boxes[query]
            box = {"xmin": round(float(cx - w / 2) * width, 2), "ymin": round(float(cy - h / 2) * height, 2),
                   "xmax": round(float(cx + w / 2) * width, 2), "ymax": round(float(cy + h / 2) * height, 2)}
            found.append({"label": self.labels[label] if label < len(self.labels) else f"LABEL_{label}",
                          "score": score, "box": box})
        return sorted(found, key=lambda d: -d["score"])

    def close(self) -> None:
        self.model = None
