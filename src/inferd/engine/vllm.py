"""vLLM's own ``AsyncLLM`` engine behind inferd's generation interface.

vLLM schedules, batches (continuous batching, paged KV cache), samples, detokenises and
applies stop strings; this module maps inferd's ``SamplingParams`` onto vLLM's and vLLM's
outputs back onto ``SequenceDelta``. The engine core runs in a child process that vLLM
spawns, so the event loop only ever awaits it. The settings come from ``backends/vllm.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from inferd.backends.vllm import VLLMBackend
from inferd.catalog import ModelRef
from inferd.engine.base import EngineObserver, EngineState, NullObserver
from inferd.engine.generation import (
    Adapter,
    GenerationEngine,
    GenerationRequest,
    SamplingParams,
    SequenceDelta,
    TokenLogprob,
    TopLogprob,
)
from inferd.errors import EngineError, InvalidRequest, ModelUnavailable, Overloaded

log = logging.getLogger(__name__)


def _prepare_environment() -> None:
    """vLLM reads these at import; they must be set before it is imported."""
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")  # no phoning home
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # LoRA ops grouped by adapter, exact without one, in vLLM's processes (engine/vllm_lora_ops.py)
    os.environ.setdefault("INFERD_VLLM_LORA_OPS", "1")


class VLLMEngine(GenerationEngine):
    def __init__(self, ref: ModelRef, backend: VLLMBackend, observer: EngineObserver | None = None):
        super().__init__(ref)
        self.backend = backend
        self.observer = observer or NullObserver()
        self.queue_size = ref.spec.limits.queue_size
        self._llm = None
        self._live: set[str] = set()

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.backend.load)
            self._llm = await asyncio.to_thread(self._build)
            self.tokenizer = await asyncio.to_thread(self._tokenizer)
        except Exception as exc:  # noqa: BLE001 - reported through the engine's state
            log.exception("model %s failed to start on vLLM", self.ref.key)
            self.state, self.error = EngineState.FAILED, f"{type(exc).__name__}: {exc}"
            return
        config = self._llm.model_config
        self.context_length = int(config.max_model_len)
        self.eos_token_ids = frozenset(self._eos_ids())
        self.state = EngineState.READY
        log.info("vLLM serves %s (%s, context %d, max %d sequences)", self.name, config.dtype, self.context_length,
                 self.ref.spec.limits.max_batch_size)

    def _build(self):
        _prepare_environment()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.backend.engine_args()))

    def _tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.backend.checkpoint)

    def _eos_ids(self) -> set[int]:
        ids = set()
        config = self._llm.model_config
        generation = config.try_get_generation_config() or {}
        value = generation.get("eos_token_id")
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    async def stop(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)
        if self.state is EngineState.READY:
            self.state = EngineState.STOPPED

    def check(self) -> str | None:
        if self._llm is not None and self._llm.errored:
            return "the vLLM engine process died"
        return None

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "running": len(self._live)}

    # --- requests

    def _sampling(self, params: SamplingParams):
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import RequestOutputKind

        from inferd.engine.vllm_grammar import request_args

        try:
            return VLLMSamplingParams(
                n=params.n,
                max_tokens=params.max_tokens,
                temperature=0.0 if params.greedy else params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else 0,
                min_p=params.min_p,
                repetition_penalty=params.repetition_penalty,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                seed=params.seed,
                stop=list(params.stop) or None,
                ignore_eos=params.ignore_eos,
                logit_bias=params.logit_bias,
                logprobs=params.logprobs,
                prompt_logprobs=params.prompt_logprobs,
                skip_special_tokens=True,
                output_kind=RequestOutputKind.DELTA if params.stream else RequestOutputKind.FINAL_ONLY,
                extra_args=None if params.constraint is None else request_args(params.constraint),
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    async def generate(self, request: GenerationRequest) -> AsyncIterator[SequenceDelta]:
        self.ensure_ready()
        if len(self._live) >= self.ref.spec.limits.max_batch_size + self.queue_size:
            raise Overloaded(f"model {self.name} has {len(self._live)} requests in flight; retry shortly",
                             retry_after=1)
        sampling = self._sampling(request.params)
        lora = self._lora(request.adapter)
        rid = request.request_id
        self._live.add(rid)
        self.observer.running(self.name, len(self._live))
        finished: set[int] = set()
        first: set[int] = set()
        want = request.params.logprobs is not None
        try:
            stream = self._llm.generate({"prompt_token_ids": request.prompt_ids}, sampling, request_id=rid,
                                        lora_request=lora)
            async for out in stream:
                for seq in out.outputs:
                    if seq.index in finished:
                        continue
                    prompt_lps, cached = None, None
                    if seq.index not in first:
                        first.add(seq.index)
                        cached = out.num_cached_tokens  # prefix-cache hits: billed at the cached rate
                        if request.params.prompt_logprobs is not None and out.prompt_logprobs is not None:
                            prompt_lps = _convert(out.prompt_logprobs, request.prompt_ids,
                                                  request.params.prompt_logprobs)
                    reason = seq.finish_reason
                    if reason is not None:
                        finished.add(seq.index)
                    yield SequenceDelta(
                        index=seq.index,
                        text=seq.text,
                        token_ids=list(seq.token_ids),
                        logprobs=_convert(seq.logprobs, seq.token_ids, request.params.logprobs) if want else None,
                        finish_reason=reason if reason in (None, "stop", "length") else "stop",
                        stop_sequence=seq.stop_reason if isinstance(seq.stop_reason, str) else None,
                        prompt_logprobs=prompt_lps,
                        cached_prompt_tokens=cached,
                    )
        except (Overloaded, InvalidRequest):
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - vLLM's own errors become ours
            if type(exc).__name__ == "EngineDeadError" or self._llm is None or self._llm.errored:
                # the pool's supervisor notices too, fails the engine and restarts it
                raise ModelUnavailable(f"model {self.name} is unavailable: the vLLM engine process died; "
                                       "it is being restarted", retry_after=5) from exc
            raise EngineError(f"vLLM failed: {exc}") from exc
        finally:
            self._live.discard(rid)
            self.observer.running(self.name, len(self._live))
            if len(finished) < request.params.n and self._llm is not None:
                await self._llm.abort(rid)

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)

    def _lora(self, adapter: Adapter | None):
        """vLLM's request for ``adapter`` (None for the base model); 400 where LoRA is off."""
        if adapter is None:
            return None
        if not self.backend.enable_lora:
            raise InvalidRequest(f"model {self.name} was started without LoRA (its options: enable_lora)")
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter.name, adapter.id, adapter.path)

    async def add_adapter(self, adapter: Adapter) -> None:
        """Load an adapter's weights now (its first request would otherwise), so a bad one fails
        here, with the reason, not in a request; vLLM keeps up to ``max_loras`` in a batch and
        ``max_cpu_loras`` loaded, and reloads an evicted one on its next request."""
        self.ensure_ready()
        request = self._lora(adapter)
        try:
            await self._llm.add_lora(request)
        except Exception as exc:  # noqa: BLE001 - vLLM's reasons (rank too high, wrong modules...) are the answer
            raise InvalidRequest(f"the adapter does not load on {self.name}: {exc}") from None

    async def remove_adapter(self, adapter: Adapter) -> None:
        if self._llm is not None:
            await self._llm.remove_lora(adapter.id)


def _convert(positions, token_ids: Sequence[int], k: int | None) -> list[TokenLogprob | None]:
    """vLLM's per-position {token_id: Logprob(logprob, rank, decoded_token)} -> inferd's."""
    out: list[TokenLogprob | None] = []
    for entry, token in zip(positions or [], token_ids, strict=False):
        if entry is None:
            out.append(None)
            continue
        chosen = entry.get(token)
        top = sorted(
            ((tid, lp) for tid, lp in entry.items() if lp.rank is not None and lp.rank <= (k or 0)),
            key=lambda item: item[1].rank,
        )
        out.append(TokenLogprob(
            token_id=token,
            token=(chosen.decoded_token or "") if chosen else "",
            logprob=float(chosen.logprob) if chosen else float("-inf"),
            top=[TopLogprob(tid, lp.decoded_token or "", float(lp.logprob)) for tid, lp in top],
        ))
    return out
