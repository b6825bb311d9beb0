"""Cross-encoder rerankers through sentence-transformers' ``CrossEncoder`` (bge-reranker,
ms-marco MiniLM, jina style): query and document go through the model together, one logit out.

The model loads exactly as ``CrossEncoder(path)`` loads it; inferd tokenises the pairs itself
(the document is cut to the context, never the request) and runs the classification model on
the batches the encoder engine cuts. Relevance is the sigmoid of the logit, as
``CrossEncoder.predict`` gives it; ``raw_scores`` return the logit.

Catalog ``options``: trust_remote_code, device (cpu).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from inferd.backends.base import (
    EncoderInput, RerankBackend, RerankPair, Tokenized, fit_pair, plain_tokenizer, right_pad, second_segment)

log = logging.getLogger(__name__)


class CrossEncoderBackend(RerankBackend):
    def load(self) -> None:
        from sentence_transformers import CrossEncoder

        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.resolve()
        encoder = CrossEncoder(
            str(path),
            device=self.options.get("device", "cpu"),
            trust_remote_code=bool(self.options.get("trust_remote_code", False)),
        )
        self.model = encoder.model.eval()
        self.tokenizer = encoder.tokenizer
        self.labels = int(self.model.config.num_labels)
        if self.labels not in (1, 2):
            raise ValueError(f"a cross-encoder reranker has 1 or 2 labels; this model has {self.labels}")
        self.vocab_size = len(self.tokenizer)
        own = encoder.max_length or getattr(self.tokenizer, "model_max_length", 512)
        own = min(int(own), int(getattr(self.model.config, "max_position_embeddings", own) or own))
        self.context_length = self.fit_context(own)
        self._rust = plain_tokenizer(self.tokenizer.backend_tokenizer)
        self._pair_specials = self._rust.num_special_tokens_to_add(True)
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._sep_id = self.tokenizer.sep_token_id
        self._token_types = "token_type_ids" in self.tokenizer.model_input_names and \
            int(getattr(self.model.config, "type_vocab_size", 1) or 1) > 1
        log.info("loaded cross-encoder %s: context %d tokens, %d label(s)", self.spec.id, self.context_length,
                 self.labels)

    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        pairs = [_pair(item) for item in inputs]
        queries = self._rust.encode_batch([p.query for p in pairs], add_special_tokens=False)
        documents = self._rust.encode_batch([p.document for p in pairs], add_special_tokens=False)
        out = []
        for q, d in zip(queries, documents, strict=True):
            original = len(q.ids) + len(d.ids) + self._pair_specials
            fit_pair(q, d, self.context_length - self._pair_specials)
            ids = self._rust.post_process(q, d, add_special_tokens=True).ids
            out.append(Tokenized(ids, original))
        return out

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        input_ids, mask = right_pad(batch, self._pad_id)
        kwargs = {}
        if self._token_types:  # [CLS] query [SEP] | document [SEP]: the document is segment 1
            kwargs["token_type_ids"] = torch.from_numpy(second_segment(batch, self._sep_id))
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask, **kwargs).logits.float()
        raw = logits[:, :1] if self.labels == 1 else logits[:, 1:2] - logits[:, :1]
        return raw.numpy()

    def close(self) -> None:
        self.model = None


def _pair(item: EncoderInput) -> RerankPair:
    if not isinstance(item, RerankPair):
        raise TypeError("a cross-encoder scores (query, document) pairs")
    return item
