"""inferd's LoRA ops for vLLM's CPU build against vLLM's own: the same numbers for tokens with an
adapter, and no delta at all for tokens without one (vLLM's read index -1 as the last slot)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from inferd.engine import vllm_lora_ops as ours


def _vllms_own():
    """A fresh copy of vLLM's module: in a process where vLLM started (other tests), inferd's
    plugin has replaced the functions of the imported one."""
    found = importlib.util.find_spec("vllm.lora.ops.torch_ops.lora_ops")
    if found is None:
        pytest.skip("vLLM is not installed")
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location("vllm_lora_ops_own",
                                                                                    found.origin))
    module.__spec__.loader.exec_module(module)
    return module


theirs = _vllms_own()

SLOTS, RANK, IN, OUT, TOKENS = 4, 8, 32, 48, 10


@pytest.fixture
def weights():
    torch.manual_seed(0)
    return torch.randn(SLOTS, 1, RANK, IN), torch.randn(SLOTS, 1, OUT, RANK)


def test_shrink_and_expand_match_vllms_for_tokens_with_adapters(weights):
    a, b = weights
    x = torch.randn(TOKENS, IN)
    idx = torch.tensor([0, 1, 1, 3, 2, 0, 3, 3, 1, 2])
    mine, ref = torch.zeros(TOKENS, RANK), torch.zeros(TOKENS, RANK)
    ours.bgmv_shrink(x, a, mine, idx, 0.5)
    theirs.bgmv_shrink(x, a, ref, idx, 0.5)
    torch.testing.assert_close(mine, ref)
    base = torch.randn(TOKENS, OUT)
    out_mine, out_ref = base.clone(), base.clone()
    ours.bgmv_expand(mine, b, out_mine, idx, add_inputs=True)
    theirs.bgmv_expand(ref, b, out_ref, idx, add_inputs=True)
    torch.testing.assert_close(out_mine, out_ref)
    sliced_mine, sliced_ref = torch.zeros(TOKENS, 2 * OUT), torch.zeros(TOKENS, 2 * OUT)
    ours.bgmv_expand_slice(mine, b, sliced_mine, idx, OUT, OUT, add_inputs=False)
    theirs.bgmv_expand_slice(ref, b, sliced_ref, idx, OUT, OUT, add_inputs=False)
    torch.testing.assert_close(sliced_mine, sliced_ref)


def test_the_prefill_forms_explode_per_sequence(weights):
    a, _ = weights
    x = torch.randn(TOKENS, IN)
    per_seq, lengths = torch.tensor([2, 0, 1]), torch.tensor([3, 4, 3])
    mine, ref = torch.zeros(TOKENS, RANK), torch.zeros(TOKENS, RANK)
    ours.sgmv_shrink(x, a, mine, None, lengths, per_seq, 3, 4, TOKENS, 1.0)
    theirs.sgmv_shrink(x, a, ref, None, lengths, per_seq, 3, 4, TOKENS, 1.0)
    torch.testing.assert_close(mine, ref)


def test_tokens_without_an_adapter_get_no_delta(weights):
    a, b = weights
    x = torch.randn(4, IN)
    idx = torch.tensor([-1, 3, -1, 0])
    shrunk = torch.full((4, RANK), 7.0)
    ours.bgmv_shrink(x, a, shrunk, idx)
    assert torch.all(shrunk[[0, 2]] == 0)
    out = torch.ones(4, OUT)
    ours.bgmv_expand(shrunk, b, out, idx, add_inputs=True)
    assert torch.all(out[[0, 2]] == 1)  # untouched
    vllm_out = torch.ones(4, OUT)
    theirs.bgmv_expand(torch.randn(4, RANK), b, vllm_out, idx, add_inputs=True)
    assert not torch.all(vllm_out[[0, 2]] == 1)  # vLLM's own: slot -1 is the last adapter's
