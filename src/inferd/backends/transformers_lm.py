"""Causal LMs through transformers: Hugging Face directories and GGUF files.

The backend loads the model and tokenizer and runs the model on batches the scheduler
(``engine/lm_scheduler.py``) forms: a prefill of new prompts, a one-token decode step
of every running sequence, and the KV-cache bookkeeping that lets sequences join and
leave a running batch (left padding, a 2-D attention mask, explicit position ids).
GGUF files are converted once to a transformers checkpoint cached under the data
directory (``backends/gguf.py``), so the next start takes a fraction of a second.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inferd.backends.base import Backend
from inferd.backends.gguf import gguf_checkpoint

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchCache:
    """The KV cache of a running batch: rows are sequences, left-padded in time."""

    cache: Any  # transformers DynamicCache
    mask: torch.Tensor  # [B, T] long: 1 where a row has a real token
    positions: torch.Tensor  # [B] long: the position id of each row's next token

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


def resolve_lm_checkpoint(path: Path, options: dict[str, Any], cache_dir: Path | None, dtype: str) -> Path:
    """A directory transformers (and vLLM) can load: GGUF files are converted once and cached."""
    gguf = options.get("gguf_file")
    if gguf:
        path = Path(path) / gguf
    if Path(path).suffix == ".gguf":
        root = (cache_dir or Path.home() / ".cache" / "inferd") / "converted"
        return gguf_checkpoint(Path(path), root, dtype=dtype)
    return Path(path)


def _sdpa_gqa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' sdpa attention, except that grouped-query heads stay grouped under a mask.

    A running batch always has a padding mask (sequences join at different steps), and with a
    mask transformers copies every layer's whole KV cache to repeat its heads before each step
    (``repeat_kv``); torch's sdpa takes the groups as they are (``enable_gqa``), same numbers,
    less than half the attention time here.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None or getattr(module, "num_key_value_groups", 1) == 1 or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("inferd_sdpa", _sdpa_gqa)
    AttentionMaskInterface.register("inferd_sdpa", sdpa_mask)
    return "inferd_sdpa"


class TransformersLMBackend(Backend):
    """A causal LM in eager PyTorch; ``options``: dtype (float32), attn_implementation
    (default: sdpa that keeps grouped-query heads grouped, see ``_sdpa_gqa``)."""

    engine = "continuous"  # the scheduler that runs it: engine/lm_scheduler.py

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        dtype = str(self.options.get("dtype", "float32"))
        self.checkpoint = resolve_lm_checkpoint(self.resolve(), self.options, self.cache_dir, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.checkpoint,
            dtype=getattr(torch, dtype),
            attn_implementation=self.options.get("attn_implementation") or _register_attention(),
            trust_remote_code=bool(self.options.get("trust_remote_code", False)),
        ).eval()
        config = self.model.config
        own = getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        self.context_length = self.fit_context(own)
        self.eos_token_ids = frozenset(_eos_ids(self.model, self.tokenizer))
        self.vocab_size = int(getattr(config, "vocab_size", 0) or len(self.tokenizer))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        log.info("loaded %s (%s, context %d tokens, eos %s)", self.spec.id, dtype, self.context_length,
                 sorted(self.eos_token_ids))

    def close(self) -> None:
        self.model = None

    # --- model steps (called from the scheduler's thread only)

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Sequence[int]], all_logits: bool = False) -> tuple[BatchCache, torch.Tensor]:
        """Run new prompts (left-padded together); logits [B, V] at the last position,
        or [B, L, V] at every position when ``all_logits`` (for prompt logprobs)."""
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
            use_cache=True, logits_to_keep=0 if all_logits else 1,
        )
        logits = out.logits.float() if all_logits else out.logits[:, -1, :].float()
        return BatchCache(out.past_key_values, mask, mask.sum(-1)), logits

    @torch.inference_mode()
    def decode(self, batch: BatchCache, tokens: Sequence[int]) -> torch.Tensor:
        """One step: each row's next token in, logits [B, V] out; the cache grows by one."""
        batch.mask = torch.cat([batch.mask, torch.ones((batch.rows, 1), dtype=torch.long)], dim=1)
        out = self.model(
            input_ids=torch.tensor(tokens, dtype=torch.long).unsqueeze(1),
            attention_mask=batch.mask,
            position_ids=batch.positions.unsqueeze(1),
            past_key_values=batch.cache,
            use_cache=True,
        )
        batch.cache = out.past_key_values
        batch.positions = batch.positions + 1
        return out.logits[:, -1, :].float()

    @staticmethod
    def merge(a: BatchCache | None, b: BatchCache) -> BatchCache:
        """Rows of ``b`` appended to ``a``; the shorter side is left-padded in time."""
        if a is None:
            return b
        ta, tb = a.mask.shape[1], b.mask.shape[1]
        width = max(ta, tb)
        for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
            la.keys = torch.cat([_left_pad(la.keys, width), _left_pad(lb.keys, width)], dim=0)
            la.values = torch.cat([_left_pad(la.values, width), _left_pad(lb.values, width)], dim=0)
        mask = torch.cat([_left_pad(a.mask, width, dim=1), _left_pad(b.mask, width, dim=1)], dim=0)
        return BatchCache(a.cache, mask, torch.cat([a.positions, b.positions]))

    @staticmethod
    def select(batch: BatchCache, rows: Sequence[int]) -> BatchCache | None:
        """Keep only ``rows`` (in that order), and drop time columns no row uses any more."""
        if not rows:
            return None
        index = torch.tensor(rows, dtype=torch.long)
        mask = batch.mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else mask.shape[1]
        for layer in batch.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
            layer.values = layer.values.index_select(0, index)[:, :, start:, :]
        return BatchCache(batch.cache, mask[:, start:], batch.positions.index_select(0, index))

    @staticmethod
    def repeat(batch: BatchCache, counts: Sequence[int]) -> BatchCache:
        """Row i repeated counts[i] times (n > 1 shares one prefill)."""
        index = torch.repeat_interleave(torch.arange(batch.rows), torch.tensor(counts))
        for layer in batch.cache.layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        return BatchCache(batch.cache, batch.mask.index_select(0, index), batch.positions.index_select(0, index))


def _left_pad(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
