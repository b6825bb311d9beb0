"""CLIP and SigLIP (transformers) on the encoder engine: texts and images into one space.

Serves embeddings of texts and images (Infinity's ``modality: "image"``, the native ``image``
field) and zero-shot image classification (an image against candidate labels). Texts and images
of one batch run through their own towers; rows are the projected embeddings, not normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inferd.backends.base import EncoderBackend, EncoderInput, ImageInput, Tokenized, right_pad
from inferd.backends.vision import ImagePreprocessor, output_tensor


class ClipBackend(EncoderBackend):
    modalities = frozenset({"text", "image"})
    normalizes = False

    def load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.resolve()
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.images = ImagePreprocessor(path)
        config = self.model.config
        text, vision = config.text_config, config.vision_config
        self.siglip = config.model_type.startswith("siglip")
        self.context_length = self.fit_context(text.max_position_embeddings)
        self.dimensions = int(getattr(config, "projection_dim", None) or text.hidden_size)
        self.vocab_size = int(text.vocab_size)
        self.image_tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.logit_scale = float(self.model.logit_scale.detach().exp())
        bias = getattr(self.model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach())

    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        out: list[Tokenized | None] = [None] * len(inputs)
        texts = [(i, x) for i, x in enumerate(inputs) if isinstance(x, str)]
        if texts:
            encoded = self.tokenizer([x for _, x in texts], add_special_tokens=True)["input_ids"]
            for (i, _), ids in zip(texts, encoded, strict=True):
                out[i] = self._fit(list(ids))
        for i, x in enumerate(inputs):
            if isinstance(x, ImageInput):
                out[i] = Tokenized(self.images(x.image), 1, cost=self.image_tokens)
            elif out[i] is None:  # token ids
                out[i] = self._fit(list(x))
        return out  # type: ignore[return-value]

    def _fit(self, ids: list[int]) -> Tokenized:
        original = len(ids)
        if original > self.context_length:  # keep the end-of-text token: CLIP pools at it
            ids = ids[: self.context_length - 1] + ids[-1:]
        return Tokenized(ids, original)

    def forward(self, batch: Sequence) -> np.ndarray:
        import torch

        out = np.empty((len(batch), self.dimensions), dtype=np.float32)
        texts = [i for i, x in enumerate(batch) if not isinstance(x, np.ndarray)]
        images = [i for i, x in enumerate(batch) if isinstance(x, np.ndarray)]
        with torch.inference_mode():
            if texts:
                rows = [batch[i] for i in texts]
                if self.siglip:  # trained on texts padded to its full length, without a mask
                    ids = torch.tensor([r + [self.pad_id] * (self.context_length - len(r)) for r in rows])
                    features = self.model.get_text_features(input_ids=ids)
                else:
                    ids, mask = right_pad(rows, self.pad_id)
                    features = self.model.get_text_features(input_ids=ids, attention_mask=mask)
                out[texts] = output_tensor(features).float().numpy()
            if images:
                pixels = torch.from_numpy(np.stack([batch[i] for i in images]))
                out[images] = output_tensor(self.model.get_image_features(pixel_values=pixels)).float().numpy()
        return out

    def zero_shot(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Scores of one image's embedding against each label's: CLIP's softmax over the labels,
        SigLIP's sigmoid per label."""
        def unit(v):
            return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

        logits = self.logit_scale * (unit(labels) @ unit(image))
        if self.logit_bias is not None:
            return 1.0 / (1.0 + np.exp(-(logits + self.logit_bias)))
        shifted = np.exp(logits - logits.max())
        return shifted / shifted.sum()

    def probe_input(self) -> EncoderInput:
        return "hello " * 64

    def close(self) -> None:
        self.model = None
