"""Causal-LM judges as rerankers, the way Qwen3-Reranker works: the model reads a judge
prompt (instruction, query, document) and the score is P("yes") against P("no") for the
next token. Only the last position's hidden state goes through the LM head, and only its
"yes" and "no" rows: two dot products instead of a vocabulary-wide projection per token.

Raw score = logit("yes") − logit("no"); relevance = its sigmoid, which is the softmax of the
two. Long documents are cut so the prompt fits the context.

Catalog ``options`` (all optional; the defaults are Qwen3-Reranker's):
  instruction      the default instruction (a request's ``instruction`` replaces it)
  prefix, suffix   the text around "<Instruct>: ...\\n<Query>: ...\\n<Document>: ..."
  yes_token, no_token   the answer tokens ("yes", "no")
  dtype            float32 (default) | bfloat16
  trust_remote_code
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from inferd.backends.base import EncoderInput, RerankBackend, RerankPair, Tokenized, right_pad
from inferd.backends.transformers_lm import resolve_lm_checkpoint

log = logging.getLogger(__name__)

INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def judge_body(pair: RerankPair, default_instruction: str) -> str:
    return f"<Instruct>: {pair.instruction or default_instruction}\n<Query>: {pair.query}\n<Document>: {pair.document}"


class LMJudgeBackend(RerankBackend):
    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        o = self.options
        dtype = str(o.get("dtype", "float32"))
        self.checkpoint = resolve_lm_checkpoint(self.resolve(), o, self.cache_dir, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        model = AutoModelForCausalLM.from_pretrained(
            self.checkpoint, dtype=getattr(torch, dtype), trust_remote_code=bool(o.get("trust_remote_code", False))
        ).eval()
        self.model = model
        self.body = model.get_decoder()  # the transformer without its LM head
        head = model.get_output_embeddings()
        self.instruction = str(o.get("instruction", INSTRUCTION))
        self._prefix = self._ids(str(o.get("prefix", PREFIX)))
        self._suffix = self._ids(str(o.get("suffix", SUFFIX)))
        answer = [self._token_id(str(o.get("yes_token", "yes"))), self._token_id(str(o.get("no_token", "no")))]
        self._head_weight = head.weight[answer].detach().float()  # [2, hidden]: "yes", "no"
        self._head_bias = head.bias[answer].detach().float() if getattr(head, "bias", None) is not None else None
        self.vocab_size = len(self.tokenizer)
        own = int(getattr(model.config, "max_position_embeddings", 0) or self.tokenizer.model_max_length)
        self.context_length = self.fit_context(own)
        if self.context_length <= len(self._prefix) + len(self._suffix) + 8:
            raise ValueError(f"context of {self.context_length} tokens leaves no room for the judge prompt")
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        log.info("loaded LM judge %s: context %d tokens", self.spec.id, self.context_length)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _token_id(self, token: str) -> int:
        ids = self._ids(token)
        if len(ids) != 1:
            raise ValueError(f"the answer {token!r} is {len(ids)} tokens for this tokenizer; it must be one")
        return ids[0]

    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        texts = []
        for item in inputs:
            if not isinstance(item, RerankPair):
                raise TypeError("an LM judge scores (query, document) pairs")
            texts.append(judge_body(item, self.instruction))
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        room = self.context_length - len(self._prefix) - len(self._suffix)
        return [Tokenized(self._prefix + ids[:room] + self._suffix, len(ids) + len(self._prefix) + len(self._suffix))
                for ids in encoded]

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        input_ids, mask = right_pad(batch, self._pad_id)
        last = torch.tensor([len(ids) - 1 for ids in batch])
        with torch.inference_mode():
            hidden = self.body(input_ids=input_ids, attention_mask=mask).last_hidden_state
            final = hidden[torch.arange(len(batch)), last].float()  # [B, hidden] at each row's last token
            logits = final @ self._head_weight.T
            if self._head_bias is not None:
                logits = logits + self._head_bias
        return (logits[:, :1] - logits[:, 1:2]).numpy()

    def close(self) -> None:
        self.model = self.body = None
