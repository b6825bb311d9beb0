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


# the fused add_lora_linear: one layer of three slices (q, k, v), 4 slots of rank 8
SLICES = (48, 16, 16)


def _layer(zero_slices=()):
    torch.manual_seed(1)
    a = tuple(torch.zeros(SLOTS, 1, RANK, IN) if i in zero_slices else torch.randn(SLOTS, 1, RANK, IN)
              for i in range(len(SLICES)))
    b = tuple(torch.zeros(SLOTS, 1, out, RANK) if i in zero_slices else torch.randn(SLOTS, 1, out, RANK)
              for i, out in enumerate(SLICES))
    return a, b


def _reference(y, x, a, b, idx, scale):
    """Token by token, slice by slice: what add_lora_linear means."""
    y = y.clone()
    for t, slot in enumerate(idx.tolist()):
        if slot < 0:
            continue
        offset = 0
        for ai, bi, out in zip(a, b, SLICES, strict=True):
            y[t, offset: offset + out] += (scale * (x[t] @ ai[slot, 0].T)) @ bi[slot, 0].T
            offset += out
    return y


class _Wrapper:
    def __init__(self, idx):
        self.token_lora_indices = idx


def test_fused_linear_equals_the_token_by_token_sum_and_leaves_tokens_without_adapter_alone():
    ours._PACKED.clear()
    a, b = _layer()
    x, y = torch.randn(TOKENS, IN), torch.randn(TOKENS, sum(SLICES))
    idx = torch.tensor([0, -1, 1, 3, -1, 2, 3, 0, -1, 1])
    expected = _reference(y, x, a, b, idx, 0.5)
    ours.add_lora_linear(_Wrapper(idx), y, x, a, b, 0.5, SLICES)
    torch.testing.assert_close(y, expected)
    assert torch.equal(y[[1, 4, 8]], expected[[1, 4, 8]])  # no delta at all, not a tiny one


def test_zero_slices_and_batches_without_adapters_cost_nothing():
    ours._PACKED.clear()
    a, b = _layer(zero_slices=(1,))
    x, y = torch.randn(TOKENS, IN), torch.randn(TOKENS, sum(SLICES))
    idx = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    expected = _reference(y, x, a, b, idx, 1.0)
    ours.add_lora_linear(_Wrapper(idx), y, x, a, b, 1.0, SLICES)
    torch.testing.assert_close(y, expected)
    packed = ours._packed(a, b, SLICES, y.dtype)
    assert packed.columns == (slice(0, 48), slice(64, 80))  # the zero slice (1) is not computed
    a0, b0 = _layer(zero_slices=(0, 1, 2))
    assert ours._packed(a0, b0, SLICES, y.dtype) is None
    before = y.clone()
    ours.add_lora_linear(_Wrapper(idx), y, x, a0, b0, 1.0, SLICES)  # a module no adapter targets
    ours.add_lora_linear(_Wrapper(torch.full((TOKENS,), -1)), y, x, a, b, 1.0, SLICES)  # no adapter here
    assert torch.equal(y, before)


def test_a_slot_loaded_or_reset_drops_the_packed_weights():
    ours._PACKED.clear()
    a, b = _layer()
    assert ours._packed(a, b, SLICES, torch.float32) is ours._packed(a, b, SLICES, torch.float32)
    x, idx = torch.randn(TOKENS, IN), torch.tensor([2] * TOKENS)
    ours._forgetting(lambda: a[0][2].zero_())()  # as vLLM's set_lora/reset_lora change a slot in place
    y = torch.zeros(TOKENS, sum(SLICES))
    ours.add_lora_linear(_Wrapper(idx), y, x, a, b, 1.0, SLICES)
    torch.testing.assert_close(y, _reference(torch.zeros_like(y), x, a, b, idx, 1.0))
    assert torch.all(y[:, : SLICES[0]] == 0)  # slot 2's new (zero) weights for slice 0


def test_in_bfloat16_it_equals_vllms_rounding():
    """bf16 (oneDNN where vLLM has it): the rank-sized product rounded to bf16, the expand in bf16."""
    ours._PACKED.clear()
    a, b = (tuple(w.to(torch.bfloat16) for w in ws) for ws in _layer())
    x, y = torch.randn(TOKENS, IN, dtype=torch.bfloat16), torch.zeros(TOKENS, sum(SLICES), dtype=torch.bfloat16)
    idx = torch.tensor([0, -1, 1, 3, -1, 2, 3, 0, -1, 1])
    expected = torch.zeros_like(y)
    for t, slot in enumerate(idx.tolist()):
        offset = 0
        for ai, bi, out in zip(a, b, SLICES, strict=True):
            if slot >= 0:
                shrunk = (x[t].float() @ ai[slot, 0].float().T).to(torch.bfloat16)
                expected[t, offset: offset + out] += shrunk @ bi[slot, 0].T
            offset += out
    ours.add_lora_linear(_Wrapper(idx), y, x, a, b, 1.0, SLICES)
    torch.testing.assert_close(y, expected, rtol=2e-2, atol=5e-2)
    assert torch.all(y[[1, 4, 8]] == 0)


def test_vllms_cpu_wrapper_uses_it_with_the_steps_mapping():
    """The real PunicaWrapperCPU (a subclass, so the class other tests use is left alone) with
    vLLM's own mapping: adapter ids to slots, each step's mask made anew."""
    from vllm.lora.layers.utils import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    class Wrapper(PunicaWrapperCPU):
        pass

    ours._install_fused(Wrapper)
    ours._PACKED.clear()
    wrapper = Wrapper(max_num_batched_tokens=64, max_batches=8, device="cpu")
    a, b = _layer()
    x = torch.randn(4, IN)
    for ids, slots in (((7, 0, 9, 7), [0, -1, 1, 0]), ((9, 9, 0, 0), [1, 1, -1, -1])):
        wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=False), [7, 9, None, None], SLOTS, 100)
        y = torch.zeros(4, sum(SLICES))
        wrapper.add_lora_linear(y, x, a, b, 1.0, SLICES)
        torch.testing.assert_close(y, _reference(torch.zeros(4, sum(SLICES)), x, a, b, torch.tensor(slots), 1.0))
