"""LoRA ops for vLLM's CPU build: grouped by adapter, and exact for tokens without one.

vLLM's CPU build runs LoRA with torch-native "punica" ops (``vllm/lora/ops/torch_ops``). They
gather the adapter weights once per token (``weights[indices]``: a [tokens, out, rank] copy for
every projection of every layer) and contract token by token; and they read the index -1 ("no
adapter") as the last adapter slot, so the base model's tokens in a batch whose last slot holds
an adapter get that adapter's delta. These versions group a batch's tokens by adapter and do one
matrix product per adapter present (at most ``max_loras``), and leave tokens without an adapter
untouched (a zero delta).

They are installed in vLLM's own processes (its engine core and workers, where the model runs)
as a vLLM general plugin — the entry point ``vllm.general_plugins: inferd_lora_ops`` in
pyproject.toml — when ``INFERD_VLLM_LORA_OPS=1``, which inferd's vLLM engine sets before it
starts vLLM (engine/vllm.py); another program using vLLM from this environment keeps vLLM's ops.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch


def register() -> None:
    """vLLM calls this in each of its processes (general plugins)."""
    if os.environ.get("INFERD_VLLM_LORA_OPS") != "1":
        return
    import vllm.lora.ops.torch_ops as package
    import vllm.lora.ops.torch_ops.lora_ops as module
    from vllm.lora.punica_wrapper import punica_cpu

    for name, op in OPS.items():
        for target in (package, module, punica_cpu):
            setattr(target, name, op)


def _weights(stacked: torch.Tensor) -> torch.Tensor:
    """[slots, 1, out, in] or [slots, out, in] -> [slots, out, in]."""
    return stacked.squeeze(1) if stacked.dim() == 4 else stacked


def _by_adapter(indices: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(adapter slot, its rows) for each slot present; rows of -1 (no adapter) are not given."""
    for slot in torch.unique(indices).tolist():
        if slot >= 0:
            yield slot, (indices == slot).nonzero(as_tuple=True)[0]


def _rows(inputs: torch.Tensor, output: torch.Tensor, indices: torch.Tensor) -> int:
    return min(inputs.shape[0], output.shape[0], indices.shape[0])


def bgmv_shrink(inputs: torch.Tensor, lora_a_weights: torch.Tensor, output_tensor: torch.Tensor,
                lora_indices_tensor: torch.Tensor, scaling: float = 1.0) -> None:
    """output[:, :rank] = scaling * inputs @ A[slot].T, per token's slot (0 without one)."""
    weights = _weights(lora_a_weights)
    n = _rows(inputs, output_tensor, lora_indices_tensor)
    x = inputs[:n].to(output_tensor.dtype)
    target = output_tensor[:n, : weights.shape[1]]
    target.zero_()
    for slot, rows in _by_adapter(lora_indices_tensor[:n]):
        target.index_copy_(0, rows, scaling * (x.index_select(0, rows) @ weights[slot].to(x.dtype).T))


def bgmv_expand(inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
                lora_indices_tensor: torch.Tensor, add_inputs: bool = True) -> None:
    """output[:, :out] (+)= inputs @ B[slot].T, per token's slot."""
    weights = _weights(lora_b_weights)
    common = min(weights.shape[1], output_tensor.shape[1])
    _expand(inputs, weights[:, :common], output_tensor, lora_indices_tensor, 0, common, add_inputs)


def bgmv_expand_slice(inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
                      lora_indices_tensor: torch.Tensor, slice_offset: int, slice_size: int,
                      add_inputs: bool = True) -> None:
    """output[:, offset:offset + size] (+)= inputs @ B[slot].T, per token's slot."""
    _expand(inputs, _weights(lora_b_weights), output_tensor, lora_indices_tensor, slice_offset, slice_size,
            add_inputs)


def _expand(inputs, weights, output_tensor, indices, offset: int, size: int, add_inputs: bool) -> None:
    n = _rows(inputs, output_tensor, indices)
    x = inputs[:n].to(output_tensor.dtype)
    target = output_tensor[:n, offset: offset + size]
    if not add_inputs:
        target.zero_()
    for slot, rows in _by_adapter(indices[:n]):
        target.index_add_(0, rows, x.index_select(0, rows) @ weights[slot].to(x.dtype).T)


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, scaling) -> None:
    bgmv_shrink(inputs, lora_a_weights, output_tensor, torch.repeat_interleave(lora_indices_tensor, seq_len_tensor),
                scaling)


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, add_inputs=False) -> None:
    bgmv_expand(inputs, lora_b_weights, output_tensor, torch.repeat_interleave(lora_indices_tensor, seq_len_tensor),
                add_inputs)


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                      batches, max_seq_length, token_nums, slice_offset, slice_size, add_inputs=False) -> None:
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor,
                      torch.repeat_interleave(lora_indices_tensor, seq_len_tensor), slice_offset, slice_size,
                      add_inputs)


OPS = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice,
       "sgmv_shrink": sgmv_shrink, "sgmv_expand": sgmv_expand, "sgmv_expand_slice": sgmv_expand_slice}
