"""LoRA ops for vLLM's CPU build: grouped by adapter, and exact for tokens without one.

vLLM's CPU build runs LoRA with torch-native "punica" ops (``vllm/lora/ops/torch_ops``). They
gather the adapter weights once per token (``weights[indices]``: a [tokens, out, rank] copy for
every projection of every layer) and contract token by token; and they read the index -1 ("no
adapter") as the last adapter slot, so the base model's tokens in a batch whose last slot holds
an adapter get that adapter's delta. These versions group a batch's tokens by adapter and do one
matrix product per adapter present (at most ``max_loras``), and leave tokens without an adapter
untouched (a zero delta).

The layers' common path, ``add_lora_linear`` (every projection of every layer, each step), is
replaced as a whole: through the per-slice ops it costs ~14 calls a layer (q, k, v, o, gate, up,
down; shrink and expand), ~400 a step, each with its own small torch calls — more than the base
model's own decode step on a small model. ``add_lora_linear`` here does one shrink for all of a
layer's live slices and all adapter slots (x @ [A of every slot and slice]), zeroes each token's
columns of the slots it does not use (a one-hot mask made once a step), and one expand per live
slice; a slice or layer whose adapter weights are all zero (a projection no loaded adapter
targets: k, o and the MLP for q/v adapters) costs nothing. In bf16/fp16 both run on vLLM's own
oneDNN GEMM with the weights packed once (as vLLM runs the base projections), in float32 on
torch's matmul. The packed weights are kept until vLLM loads or resets an adapter slot
(``set_lora`` / ``reset_lora``, wrapped to say so). The arithmetic is ``max_loras`` times the
rank's (small beside the base projection at the usual 4-8 slots).

They are installed in vLLM's own processes (its engine core and workers, where the model runs)
as a vLLM general plugin — the entry point ``vllm.general_plugins: inferd_lora_ops`` in
pyproject.toml — when ``INFERD_VLLM_LORA_OPS=1``, which inferd's vLLM engine sets before it
starts vLLM (engine/vllm.py); another program using vLLM from this environment keeps vLLM's ops.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
    _install_fused(punica_cpu.PunicaWrapperCPU)


def _install_fused(wrapper_class) -> None:
    """``add_lora_linear`` on vLLM's CPU wrapper, the step's mask reset by ``update_metadata``,
    and the packed weights dropped whenever a LoRA layer loads or resets a slot."""
    import vllm.lora.layers as layers

    if getattr(wrapper_class, "_inferd_fused", False):
        return
    original_update = wrapper_class.update_metadata

    def update_metadata(self, *args, **kwargs):
        original_update(self, *args, **kwargs)
        self._inferd_mask = None

    wrapper_class.update_metadata = update_metadata
    wrapper_class.add_lora_linear = add_lora_linear
    wrapper_class._inferd_fused = True
    for layer_class in _subclasses(layers.BaseLayerWithLoRA):
        for name in ("set_lora", "reset_lora"):
            if name in vars(layer_class):
                setattr(layer_class, name, _forgetting(getattr(layer_class, name)))


def _subclasses(cls) -> list[type]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def _forgetting(method):
    def wrapped(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        finally:
            _PACKED.clear()
    wrapped.__wrapped__ = method
    return wrapped


@dataclass(frozen=True, slots=True)
class _Packed:
    """A layer's adapter weights for ``add_lora_linear``, for the slices some slot's weights make
    live (a slice no loaded adapter targets costs nothing): ``columns[j]`` the output columns of
    live slice j in the layer; ``shrink`` x [rows, in] -> [rows, live slices*slots*rank];
    ``expand[j]`` [rows, slots*rank] -> [rows, its columns]."""

    columns: tuple[slice, ...]
    shrink: Callable[[torch.Tensor], torch.Tensor]
    expand: tuple[Callable[[torch.Tensor], torch.Tensor], ...]
    slots: int
    rank: int


def _matmul(weight: torch.Tensor, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """x [rows, k] -> x @ weight ([k, n]). In bf16/fp16, vLLM's oneDNN GEMM on the weight packed
    once (as vLLM runs the base projections: ~2x torch's matmul at these shapes); in float32,
    torch's (the numbers of vLLM's own ops exactly)."""
    weight = weight.to(dtype)
    if dtype in (torch.bfloat16, torch.float16):
        try:
            from vllm import _custom_ops as ops

            if ops._supports_onednn:
                transposed = weight.T.contiguous()  # [n, k]; the handler takes its [k, n] view, as vLLM does
                handler = ops.create_onednn_mm(transposed.T, 32)
                return lambda x: ops.onednn_mm(handler, x.contiguous(), None)
        except (ImportError, RuntimeError):  # no oneDNN in this build: torch's matmul
            pass
    weight = weight.contiguous()
    return lambda x: x @ weight


# id of a layer's lora_a_stacked tuple -> (the tuple, kept alive so its id is no other's; its
# packed weights, None when all zero)
_PACKED: dict[int, tuple[tuple, _Packed | None]] = {}


def _packed(lora_a_stacked: tuple, lora_b_stacked: tuple, output_slices: tuple[int, ...],
            dtype: torch.dtype) -> _Packed | None:
    """The packed weights of one layer, or None when every slice of every slot is zero."""
    seen = _PACKED.get(id(lora_a_stacked))
    if seen is not None and seen[0] is lora_a_stacked:
        return seen[1]
    a = [_weights(w) for w in lora_a_stacked]  # each [slots, rank, in]
    b = [_weights(w) for w in lora_b_stacked]  # each [slots, out_i, rank]
    slots, rank = a[0].shape[0], a[0].shape[1]
    live = tuple(i for i, (ai, bi) in enumerate(zip(a, b, strict=True))
                 if bool(torch.any(ai != 0)) and bool(torch.any(bi != 0)))
    packed = None
    if live:
        # the shrink in float32 for a float32 model, else in its dtype with float32 sums (oneDNN): the
        # rank-sized result is rounded to the model's dtype before the expand either way (vLLM's ops too)
        shrink = torch.stack([a[i] for i in live]).reshape(len(live) * slots * rank, -1).T
        starts = [sum(output_slices[:i]) for i in range(len(output_slices))]
        columns = tuple(slice(starts[i], starts[i] + output_slices[i]) for i in live)
        expand = tuple(_matmul(b[i][:, : output_slices[i]].transpose(1, 2).reshape(slots * rank, -1), dtype)
                       for i in live)
        packed = _Packed(columns, _matmul(shrink, dtype), expand, slots, rank)
    _PACKED[id(lora_a_stacked)] = (lora_a_stacked, packed)
    return packed


def _mask(wrapper, rows: int, slots: int, dtype: torch.dtype) -> torch.Tensor | None:
    """[rows, slots]: 1 where the token uses the slot; None when no token uses any. Made once a step
    (``update_metadata`` resets it)."""
    cached = getattr(wrapper, "_inferd_mask", None)
    if cached is None or cached[0] != (rows, slots, dtype):
        indices = wrapper.token_lora_indices[:rows]
        mask = torch.zeros(rows, slots, dtype=dtype)
        mask[: indices.shape[0]] = indices.unsqueeze(1) == torch.arange(slots, device=indices.device)
        cached = wrapper._inferd_mask = ((rows, slots, dtype), mask if bool(mask.any()) else None)
    return cached[1]


def add_lora_linear(self, y: torch.Tensor, x: torch.Tensor, lora_a_stacked: tuple, lora_b_stacked: tuple,
                    scale: float, output_slices: tuple[int, ...], *, buffer=None, **kwargs) -> None:
    """y[:, slice i] += scale * (x @ A_i[slot].T) @ B_i[slot].T for each token's adapter slot; tokens
    without one (-1) get nothing. vLLM's numbers: the rank-sized product is rounded to y's dtype
    before the expand, which runs in y's dtype."""
    if kwargs.get("add_inputs") is False:  # the delta alone (vLLM's two-stream form)
        y.zero_()
    packed = _packed(lora_a_stacked, lora_b_stacked, tuple(output_slices), y.dtype)
    if packed is None:
        return
    x = x.reshape(-1, x.shape[-1])
    rows = x.shape[0]
    mask = _mask(self, rows, packed.slots, y.dtype)
    if mask is None:
        return
    out = y.view(-1, y.shape[-1])
    every = packed.shrink(x.to(y.dtype)).view(rows, len(packed.columns), packed.slots, packed.rank)
    every.mul_(mask.view(rows, 1, packed.slots, 1))
    if scale != 1.0:
        every.mul_(scale)
    for j, columns in enumerate(packed.columns):
        out[:, columns].add_(packed.expand[j](every[:, j].reshape(rows, -1)))


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
