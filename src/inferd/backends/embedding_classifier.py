"""text-classification by a scikit-learn classifier over a sentence-embedding model (the shipped
MiniLM intent classifier: 150-odd intents, logistic regression over all-MiniLM-L6-v2). The
embedding model runs on the encoder engine's batches exactly as the embeddings backend runs it;
the classifier's ``predict_proba`` gives each label's score.

Catalog ``source``: the folder that holds the classifier (joblib). ``options``:
``encoder`` (the embedding model's source, as a catalog source: ``pkg:...``, ``hf:...``, a path),
``head`` (the classifier's file in the folder, default ``LogisticRegression.joblib``),
``labels`` (optional: a joblib dict from the classifier's classes to label names).

A joblib file is a pickle, and loading a pickle runs code: this backend loads only what the
catalog file names (an operator's choice), never a user's deployment.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from inferd.backends.base import EncoderInput, Tokenized
from inferd.backends.sentence_transformers import SentenceTransformerBackend
from inferd.backends.text_tasks import TextTaskBackend
from inferd.catalog import Task

log = logging.getLogger(__name__)


class EmbeddingClassifierBackend(TextTaskBackend):
    tasks = frozenset({Task.TEXT_CLASSIFICATION})

    def load(self) -> None:
        import joblib

        self.check_task()
        if "encoder" not in self.options:
            raise ValueError(f"{self.spec.id}: options.encoder (the embedding model's source) is required")
        folder = self.resolve()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's warning that the pickle is of another version
            self.head = joblib.load(folder / self.options.get("head", "LogisticRegression.joblib"))
            names = joblib.load(folder / self.options["labels"]) if self.options.get("labels") else {}
        if not hasattr(self.head, "predict_proba"):
            raise ValueError(f"{self.spec.id}: the classifier gives no probabilities (no predict_proba)")
        self.labels = [_label(c, names) for c in self.head.classes_]
        self.encoder = SentenceTransformerBackend(self.spec, self.options["encoder"], {}, threads=self.threads,
                                                  cache_dir=self.cache_dir)
        self.encoder.load()
        self.context_length = self.encoder.context_length
        self.vocab_size = self.encoder.vocab_size
        self.dimensions = len(self.labels)
        log.info("loaded embedding classifier %s: %d labels over %s", self.spec.id, len(self.labels),
                 self.options["encoder"])

    def probe_input(self) -> EncoderInput:
        return "hello " * 64

    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        return self.encoder.tokenize(inputs)

    def forward(self, batch: Sequence[Sequence[int]]) -> list:
        embeddings = self.encoder.forward(batch)
        return list(self.head.predict_proba(embeddings).astype(np.float32))

    def close(self) -> None:
        self.encoder.close()
        self.head = None


def _label(value, names: dict) -> str:
    """A class's name: the label map's (either way round: some maps go from name to class)."""
    key = str(value)
    if key in names and not str(names[key]).lstrip("-").isdigit():
        return str(names[key])
    for name, cls in names.items():
        if str(cls) == key:
            return str(name)
    return key
