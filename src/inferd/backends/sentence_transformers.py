"""Embedding models through sentence-transformers (any ST directory or plain HF encoder)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from inferd.backends.base import EncoderBackend, EncoderInput, Tokenized

log = logging.getLogger(__name__)


class SentenceTransformerBackend(EncoderBackend):
    """Tokenises with the model's own tokenizer and runs the module pipeline
    (transformer -> pooling -> normalise) exactly as ``SentenceTransformer.encode`` does,
    but on batches inferd has already cut and tokenised."""

    def load(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize

        self._torch = torch
        path = self.resolve()
        model = SentenceTransformer(
            str(path),
            device=self.options.get("device", "cpu"),
            trust_remote_code=bool(self.options.get("trust_remote_code", False)),
        )
        model.eval()
        self.model = model
        self.tokenizer = model.tokenizer
        self.dimensions = int(_embedding_dimension(model))
        self.vocab_size = len(self.tokenizer)
        own_length = model.max_seq_length or getattr(self.tokenizer, "model_max_length", 512)
        wanted = self.spec.limits.context_length
        self.context_length = min(own_length, wanted) if wanted else own_length
        self.normalizes = any(isinstance(module, Normalize) for module in model)
        self._rust = _plain_copy(self.tokenizer.backend_tokenizer)
        self._prefix, self._suffix = _special_wrapping(self._rust)
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._feature_template = self._probe_features()
        log.info(
            "loaded %s: %d dims, context %d tokens, normalised=%s",
            self.spec.id, self.dimensions, self.context_length, self.normalizes,
        )

    def _probe_features(self) -> dict:
        """Learn which inputs the module pipeline wants (token_type_ids, modality...)."""
        features = self.model.preprocess(["probe"]) if hasattr(self.model, "preprocess") else self.model.tokenize(["probe"])
        return {key: (None if hasattr(value, "shape") else value) for key, value in features.items()}

    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        texts = [item for item in inputs if isinstance(item, str)]
        encoded = iter(self._rust.encode_batch(texts, add_special_tokens=False) if texts else ())
        prefix, suffix = self._prefix, self._suffix
        specials = len(prefix) + len(suffix)
        budget = self.context_length - specials
        out = []
        for item in inputs:
            ids = next(encoded).ids if isinstance(item, str) else list(item)
            out.append(Tokenized(prefix + ids[:budget] + suffix, len(ids) + specials))
        return out

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        torch = self._torch
        width = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        tensors = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.zeros_like(torch.from_numpy(input_ids)),
        }
        features = {key: tensors.get(key, value) for key, value in self._feature_template.items()}
        with torch.inference_mode():
            embeddings = self.model(features)["sentence_embedding"]
        return embeddings.float().numpy()

    def close(self) -> None:
        self.model = None


def _embedding_dimension(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return getter()


def _plain_copy(tokenizer):
    """A private copy of the Rust tokenizer with no truncation or padding configured."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _special_wrapping(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the model puts before and after one sequence ([CLS] .. [SEP])."""
    bare = tokenizer.encode("hello", add_special_tokens=False).ids
    full = tokenizer.encode("hello", add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []
