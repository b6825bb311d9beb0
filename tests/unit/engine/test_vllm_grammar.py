"""inferd's vLLM logits processor keeps a failing grammar to its own row: it runs inside vLLM's
engine process, where an exception would fail every request. Driven here as vLLM drives it
(batch updates with live output lists, then ``apply`` on a logits batch), with SmolLM2's
tokenizer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from inferd.engine.grammar import Constraint, GrammarFactory
from inferd.engine.vllm_grammar import GrammarLogitsProcessor, request_args


@pytest.fixture(scope="module")
def processor_parts(tiny_lm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    vocab = len(tokenizer)
    return tokenizer, vocab, GrammarFactory(tokenizer, vocab, {tokenizer.eos_token_id})


def make_processor(parts) -> GrammarLogitsProcessor:
    tokenizer, _, factory = parts
    processor = GrammarLogitsProcessor.__new__(GrammarLogitsProcessor)  # vLLM's config is not needed here
    processor._rows, processor._eos, processor._factory = {}, tokenizer.eos_token_id, factory
    return processor


def added(*rows):
    return SimpleNamespace(removed=[], moved=[], added=[
        (index, SimpleNamespace(extra_args=request_args(constraint) if constraint else None, max_tokens=32), [1], out)
        for index, constraint, out in rows])


def test_a_grammar_that_raises_ends_its_row_only(processor_parts):
    tokenizer, vocab, _ = processor_parts
    processor = make_processor(processor_parts)
    good, bad, free = [], [], []
    processor.update_state(added((0, Constraint.json_object(), good), (1, Constraint.json_object(), bad),
                                 (2, None, free)))

    class Broken:
        def consume(self, token):
            raise RuntimeError("matcher bug")

    processor._rows[1].matcher = Broken()
    brace = tokenizer.encode("{", add_special_tokens=False)[0]
    good.append(brace)
    bad.append(brace)
    processor.update_state(None)  # must not raise
    logits = processor.apply(torch.zeros(3, vocab))
    assert torch.isfinite(logits[0]).sum() > 1 and not torch.isfinite(logits[0, brace])  # the grammar's mask
    assert torch.isfinite(logits[1]).nonzero().flatten().tolist() == [tokenizer.eos_token_id]  # it may only end
    assert torch.isfinite(logits[2]).all()  # an unconstrained row is untouched


def test_a_grammar_that_cannot_be_built_ends_its_row_only(processor_parts):
    _, vocab, _ = processor_parts
    processor = make_processor(processor_parts)
    processor.update_state(added((0, Constraint("no-such-kind", "x"), []), (1, Constraint.json_object(), [])))
    logits = processor.apply(torch.zeros(2, vocab))
    assert torch.isfinite(logits[0]).sum() == 1
    assert torch.isfinite(logits[1]).sum() > 1
