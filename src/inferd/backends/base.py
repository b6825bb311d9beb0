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

EncoderInput = str | Sequence[int]


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
    """Text in, one vector out: embedding models (and bi-encoder rerankers later)."""

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
