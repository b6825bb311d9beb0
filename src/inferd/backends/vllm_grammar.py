"""inferd's structured output inside vLLM's engine: a vLLM logits processor that runs the same
llguidance grammars and the same budget keeping (``engine/grammar.py``) as the transformers
runtime, so a structured answer parses on both runtimes even when max_tokens is tight.

vLLM loads this class in its engine-core process (``logits_processors`` engine argument);
a request opts in through ``SamplingParams.extra_args["inferd_constraint"]``. The processor
sees each request's output tokens through the live list vLLM hands it, consumes the new ones
before each step, and masks the logits of constrained rows only.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from inferd.engine.grammar import BudgetedMatcher, Constraint, GrammarFactory

EXTRA_KEY = "inferd_constraint"


def request_args(constraint: Constraint, eos_token_id: int) -> dict[str, Any]:
    """What a request carries in ``extra_args`` for this processor."""
    return {EXTRA_KEY: {"kind": constraint.kind, "source": constraint.source, "eos": eos_token_id}}


class _Row:
    __slots__ = ("matcher", "output", "seen")

    def __init__(self, matcher: BudgetedMatcher, output: list[int]):
        self.matcher = matcher
        self.output = output  # vLLM's live list of this request's output tokens
        self.seen = 0


class GrammarLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self._model = vllm_config.model_config
        self._factory: GrammarFactory | None = None
        self._rows: dict[int, _Row] = {}

    def _grammars(self, eos: int) -> GrammarFactory:
        if self._factory is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self._model.tokenizer,
                                                      trust_remote_code=self._model.trust_remote_code)
            self._factory = GrammarFactory(tokenizer, self._model.get_vocab_size(), {eos})
        return self._factory

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is not None:
            for index in batch_update.removed:
                self._rows.pop(index, None)
            for index, params, _prompt, output in batch_update.added:
                spec = (params.extra_args or {}).get(EXTRA_KEY)
                if spec is None:
                    self._rows.pop(index, None)
                    continue
                matcher = BudgetedMatcher(self._grammars(spec["eos"]), Constraint(spec["kind"], spec["source"]),
                                          params.max_tokens)
                self._rows[index] = _Row(matcher, output)
            for a, b, direction in batch_update.moved:
                row_a, row_b = self._rows.pop(a, None), self._rows.pop(b, None)
                if row_a is not None:
                    self._rows[b] = row_a
                if direction == MoveDirectionality.SWAP and row_b is not None:
                    self._rows[a] = row_b
        for row in self._rows.values():
            while row.seen < len(row.output):
                row.matcher.consume(row.output[row.seen])
                row.seen += 1

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        for index, row in self._rows.items():
            allowed = row.matcher.allowed(len(row.output), vocab).to(logits.device)
            logits[index].masked_fill_(~allowed, float("-inf"))
        return logits
