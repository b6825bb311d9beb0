"""The classic text tasks with transformers: any ``AutoModelForSequenceClassification``
(text-classification), ``AutoModelForTokenClassification`` (token-classification),
``AutoModelForMaskedLM`` (fill-mask) or ``AutoModelForQuestionAnswering`` (question-answering)
id or directory, run on the batches the encoder engine cuts. The catalog's ``task`` picks the
head; tokenisation, offsets and the answers are ``text_tasks``'.

Catalog ``options``: none needed (``trust_remote_code`` is never on).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from inferd.backends.base import right_pad
from inferd.backends.text_tasks import TextTaskBackend
from inferd.backends.vision import config_labels
from inferd.catalog import Task

log = logging.getLogger(__name__)

_HEADS = {
    Task.TEXT_CLASSIFICATION: "AutoModelForSequenceClassification",
    Task.TOKEN_CLASSIFICATION: "AutoModelForTokenClassification",
    Task.FILL_MASK: "AutoModelForMaskedLM",
    Task.QUESTION_ANSWERING: "AutoModelForQuestionAnswering",
}


class TransformersTextBackend(TextTaskBackend):
    tasks = frozenset(_HEADS)

    def load(self) -> None:
        import torch
        import transformers
        from transformers import AutoTokenizer

        self.check_task()
        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.resolve()
        head = getattr(transformers, _HEADS[self.task])
        self.model = head.from_pretrained(str(path), dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{self.spec.id}: a fast (Rust) tokenizer is needed for character offsets")
        self.setup_tokenizer(tokenizer.backend_tokenizer)
        config = self.model.config
        self.labels = config_labels(config) if self.task in (Task.TEXT_CLASSIFICATION, Task.TOKEN_CLASSIFICATION) else []
        self.multi_label = config.problem_type == "multi_label_classification"
        self.mask_token = tokenizer.mask_token
        if self.task is Task.FILL_MASK and not self.mask_token:
            raise ValueError(f"{self.spec.id}: the tokenizer has no mask token")
        self.dimensions = max(len(self.labels), 1)
        own = min(int(getattr(tokenizer, "model_max_length", 512) or 512),
                  int(getattr(config, "max_position_embeddings", 512) or 512))
        self.context_length = self.fit_context(own)
        self._pad_id = tokenizer.pad_token_id or 0
        self._sep_id = tokenizer.sep_token_id
        self._token_types = "token_type_ids" in tokenizer.model_input_names and \
            int(getattr(config, "type_vocab_size", 1) or 1) > 1
        log.info("loaded %s model %s: context %d tokens%s", self.task.value, self.spec.id, self.context_length,
                 f", {len(self.labels)} labels" if self.labels else "")

    def forward(self, batch: Sequence[Sequence[int]]) -> list:
        import torch

        input_ids, mask = right_pad(batch, self._pad_id)
        kwargs = {}
        if self._token_types:
            kwargs["token_type_ids"] = torch.from_numpy(self.token_types(batch, self._sep_id))
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=mask, **kwargs)
        if self.task is Task.QUESTION_ANSWERING:
            logits = torch.stack([out.start_logits, out.end_logits], dim=-1)
        elif self.task is Task.FILL_MASK:  # only the mask's position: [batch, 1, vocab], not every token's
            logits = out.logits[torch.arange(len(batch)), torch.tensor(self.mask_positions(batch))].unsqueeze(1)
        else:
            logits = out.logits
        return self.rows(logits.float().numpy(), batch)

    def close(self) -> None:
        self.model = None
