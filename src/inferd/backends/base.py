"""What a runtime must provide. A new backend is one module here plus one registry line."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferd.catalog.sources import resolve_source
from inferd.catalog.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class RerankPair:
    """One (query, document) pair for a reranker, with the judge's instruction if any."""

    query: str
    document: str
    instruction: str | None = None


EncoderInput = str | Sequence[int] | RerankPair


@dataclass(slots=True)
class Tokenized:
    """One input as the model will see it."""

    ids: list[int]  # with special tokens, truncated to the context when allowed
    original_length: int  # tokens before truncation (special tokens included)


class Backend(ABC):
    """A runtime that owns one loaded model."""

    def __init__(
        self,
        spec: ModelSpec,
        source: str,
        options: dict[str, Any],
        threads: int | None = None,
        cache_dir: Path | None = None,
    ):
        self.spec = spec
        self.source = source
        self.options = options
        self.threads = threads  # intra-op threads per forward pass; None: the runtime's default
        self.cache_dir = cache_dir  # where converted checkpoints and compiled artefacts go
        self.path: Path | None = None

    def fit_context(self, own: int) -> int:
        """The model's own context length, cut to the catalog's ``limits.context_length`` if smaller."""
        wanted = self.spec.limits.context_length
        return int(min(own, wanted) if wanted else own)

    def resolve(self) -> Path:
        """Where the weights are (may download: call it from load(), off the event loop)."""
        self.path = resolve_source(self.source)
        return self.path

    @abstractmethod
    def load(self) -> None:
        """Resolve the source and load weights; runs in a worker thread, may take long,
        raises with a clear message."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what load() took."""


class EncoderBackend(Backend):
    """An input in, one vector out, batched by the encoder engine: embedding models, rerankers."""

    context_length: int
    dimensions: int
    vocab_size: int
    normalizes: bool  # whether the model's own output is L2-normalised

    @abstractmethod
    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        """Texts or token ids -> ids with special tokens; thread-safe with forward()."""

    @abstractmethod
    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """A batch of token id lists -> float32 array [len(batch), dimensions]."""

    def probe_input(self) -> EncoderInput:
        """A long-ish input the engine tokenises to warm the model up and measure its cost."""
        return "hello " * 64


class RerankBackend(EncoderBackend):
    """A reranker on the encoder engine. ``scoring`` says what the engine's rows are:

    * ``"pairs"`` (cross-encoders, LM judges): inputs are ``RerankPair``s, each row one raw
      score (a logit: log-odds of relevance);
    * ``"cosine"`` (bi-encoders): inputs are texts, rows are embeddings; the raw score of a
      pair is the cosine of its query's and document's embeddings.

    ``to_unit`` maps raw scores to relevance in [0, 1].
    """

    scoring: str = "pairs"
    dimensions = 1  # pair scorers: one raw score a row
    normalizes = False

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores -> relevance in [0, 1]; for logits (log-odds of relevance), the sigmoid."""
        return 1.0 / (1.0 + np.exp(-raw))

    def probe_input(self) -> EncoderInput:
        return RerankPair("hello", "hello " * 64) if self.scoring == "pairs" else super().probe_input()


def right_pad(batch: Sequence[Sequence[int]], pad_id: int):
    """Token id lists -> (input_ids, attention_mask), both torch int64 [len(batch), longest]."""
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(mask)
