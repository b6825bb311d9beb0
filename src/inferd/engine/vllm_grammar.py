"""inferd's structured output inside vLLM's engine: a vLLM logits processor that runs the same
llguidance grammars and the same budget keeping (``engine/grammar.py``) as the transformers
runtime, so a structured answer parses on both runtimes even when max_tokens is tight.

vLLM loads this class in its engine-core process (``logits_processors`` engine argument);
a request opts in through ``SamplingParams.extra_args["inferd_constraint"]``. The processor
sees each request's output tokens through the live list vLLM hands it, consumes the new ones
before each step, and masks the logits of constrained rows only.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from inferd.engine.grammar import BudgetedMatcher, Constraint, GrammarFactory, masks

log = logging.getLogger(__name__)

EXTRA_KEY = "inferd_constraint"


def request_args(constraint: Constraint) -> dict[str, Any]:
    """What a request carries in ``extra_args`` for this processor."""
    return {EXTRA_KEY: {"kind": constraint.kind, "source": constraint.source}}


class _Row:
    __slots__ = ("matcher", "output", "seen", "broken")

    def __init__(self, matcher: BudgetedMatcher | None, output: list[int]):
        self.matcher = matcher
        self.output = output  # vLLM's live list of this request's output tokens
        self.seen = 0
        self.broken = matcher is None  # the grammar failed on this row: it may only end now


class GrammarLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        from transformers import AutoTokenizer

        model = vllm_config.model_config
        self._rows: dict[int, _Row] = {}
        # built when the engine starts (~1 s), not on the first structured request
        tokenizer = AutoTokenizer.from_pretrained(model.tokenizer, trust_remote_code=model.trust_remote_code)
        self._eos = tokenizer.eos_token_id
        self._factory = GrammarFactory(tokenizer, model.get_vocab_size(), {self._eos})

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
                matcher = self._guarded(lambda: BudgetedMatcher(
                    self._factory, Constraint(spec["kind"], spec["source"]), params.max_tokens))
                self._rows[index] = _Row(matcher if matcher is not False else None, output)
            for a, b, direction in batch_update.moved:
                row_a, row_b = self._rows.pop(a, None), self._rows.pop(b, None)
                if row_a is not None:
                    self._rows[b] = row_a
                if direction == MoveDirectionality.SWAP and row_b is not None:
                    self._rows[a] = row_b
        for row in self._rows.values():
            while not row.broken and row.seen < len(row.output):
                if self._guarded(lambda r=row: r.matcher.consume(r.output[r.seen])) is False:
                    row.broken = True
                row.seen += 1

    @staticmethod
    def _guarded(work):
        """Run one row's grammar work; an error ends that row only (this runs inside vLLM's engine
        process, where an exception would take every request down). False when it failed."""
        try:
            result = work()
            return True if result is None else result
        except Exception:  # noqa: BLE001
            log.exception("structured output failed on one request; ending it")
            return False

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self._rows:
            return logits
        broken = [i for i, r in self._rows.items() if r.broken]
        live = [i for i, r in self._rows.items() if not r.broken]
        if live:
            rows = [self._rows[i] for i in live]
            allowed = self._guarded(lambda: masks([r.matcher for r in rows], [len(r.output) for r in rows],
                                                  logits.shape[-1]))
            if allowed is False:  # one matcher broke the batch's masks: find it, row by row
                for i, row in zip(live, rows, strict=True):
                    one = self._guarded(lambda r=row: masks([r.matcher], [len(r.output)], logits.shape[-1]))
                    if one is False:
                        row.broken = True
                        broken.append(i)
                    else:
                        logits[i] = logits[i].masked_fill(~one[0].to(logits.device), float("-inf"))
            else:
                where = torch.tensor(live, device=logits.device)
                logits[where] = logits[where].masked_fill(~allowed.to(logits.device), float("-inf"))
        for i in broken:  # a row whose grammar failed may only end
            eos = logits[i, self._eos].clone()
            logits[i] = float("-inf")
            logits[i, self._eos] = eos if torch.isfinite(eos) else 0.0
        return logits
