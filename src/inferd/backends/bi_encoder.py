"""Bi-encoder rerankers: an embedding model scores a pair by the cosine of the query's and
the document's embeddings — the cheap reranker people build from an embedding model they
already serve. Relevance = (cosine + 1) / 2, in [0, 1] and in the cosine's order;
``raw_scores`` return the cosine. Loads and batches exactly like the embeddings backend.
"""

from __future__ import annotations

from inferd.backends.base import RerankBackend
from inferd.backends.sentence_transformers import SentenceTransformerBackend


class BiEncoderBackend(SentenceTransformerBackend, RerankBackend):
    scoring = "cosine"
