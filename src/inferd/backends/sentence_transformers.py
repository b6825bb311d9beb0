"""Embedding models through sentence-transformers (any ST directory or plain HF encoder)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from inferd.backends.base import EncoderBackend, EncoderInput, Tokenized, plain_tokenizer, right_pad

log = logging.getLogger(__name__)


class SentenceTransformerBackend(EncoderBackend):
    """Tokenises with the model's own tokenizer and runs the module pipeline
    (transformer -> pooling -> normalise) exactly as ``SentenceTransformer.encode`` does,
    but on batches inferd has already cut and tokenised."""

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize

        if self.threads:
            torch.set_num_threads(self.threads)  # process-wide; every worker gets this many
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
        self.context_length = self.fit_context(own_length)
        self.normalizes = any(isinstance(module, Normalize) for module in model)
        self._rust = plain_tokenizer(self.tokenizer.backend_tokenizer)
        self._prefix, self._suffix = _special_wrapping(self._rust)
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._feature_template = self._probe_features()
        self._traced = self._trace() if self.options.get("torchscript", True) else None
        log.info(
            "loaded %s: %d dims, context %d tokens, normalised=%s",
            self.spec.id, self.dimensions, self.context_length, self.normalizes,
        )

    def _probe_features(self) -> dict:
        """Learn which inputs the module pipeline wants (token_type_ids, modality...)."""
        features = self.model.preprocess(["probe"]) if hasattr(self.model, "preprocess") else self.model.tokenize(["probe"])
        return {key: (None if hasattr(value, "shape") else value) for key, value in features.items()}

    def _trace(self):
        """TorchScript the common pipeline (transformer -> mean/CLS pooling -> optional
        normalise) so the forward pass runs as one graph: faster, and it holds the GIL only
        on entry, leaving the event loop free while it runs. Verified against the eager
        pipeline on inputs of other shapes; any mismatch or failure keeps the eager path."""
        names = [type(module).__name__ for module in self.model]
        if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        mode = getattr(self.model[1], "pooling_mode", None)
        encoder = getattr(self.model[0], "auto_model", None)
        if mode not in ("mean", "cls") or encoder is None or not getattr(self.model[1], "include_prompt", True):
            return None
        graph = _Pipeline(encoder, mode, normalize=len(names) == 3, token_types="token_type_ids" in self._feature_template)
        probes = [t.ids for t in self.tokenize(["hello", "a longer probe sentence, with punctuation and more words", "x y z"])]
        return checked_trace(self.spec.id, graph, 2, lambda traced: np.allclose(
            traced(*self._pad(probes)).numpy(), self._eager_forward(probes), atol=1e-5))

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
        if self._traced is None:
            return self._eager_forward(batch)
        with torch.inference_mode():
            return self._traced(*self._pad(batch)).numpy()

    def _eager_forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        input_ids, mask = self._pad(batch)
        tensors = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids)}
        features = {key: tensors.get(key, value) for key, value in self._feature_template.items()}
        with torch.inference_mode():
            embeddings = self.model(features)["sentence_embedding"]
        return embeddings.float().numpy()

    def _pad(self, batch: Sequence[Sequence[int]]):
        return right_pad(batch, self._pad_id)

    def close(self) -> None:
        self.model = None


def checked_trace(name: str, module: torch.nn.Module, inputs: int, same: Callable) -> torch.jit.ScriptModule | None:
    """``module`` traced with TorchScript (on ``inputs`` example id tensors) and frozen, if
    ``same(traced)`` finds it gives the eager module's output; None (logged) otherwise or when tracing
    fails: the eager path always works. A graph holds the interpreter only on entry, so the event
    loop and the tokenizer run while it computes."""
    example = torch.ones(2, 8, dtype=torch.long)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(module.eval(), (example,) * inputs, check_trace=False))
            if not same(traced):
                raise ValueError("traced output differs from the eager module")
    except Exception as exc:  # noqa: BLE001 - the eager path always works
        log.warning("%s: TorchScript fast path not used (%s)", name, exc)
        return None
    log.info("%s: forward pass runs as a TorchScript graph", name)
    return traced


def _embedding_dimension(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return getter()


def _special_wrapping(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the model puts before and after one sequence ([CLS] .. [SEP])."""
    bare = tokenizer.encode("hello", add_special_tokens=False).ids
    full = tokenizer.encode("hello", add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


class _Pipeline(torch.nn.Module):
    """transformer -> pooling -> normalise, as sentence-transformers' modules compute it."""

    def __init__(self, encoder, mode: str, normalize: bool, token_types: bool):
        super().__init__()
        self.encoder = encoder
        self.mean = mode == "mean"
        self.normalize = normalize
        self.token_types = token_types

    def forward(self, input_ids, attention_mask):
        kwargs = {"token_type_ids": torch.zeros_like(input_ids)} if self.token_types else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        if self.mean:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        else:
            pooled = hidden[:, 0]
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float()
