"""The vLLM runtime's settings: the catalog entry's options become vLLM's engine arguments;
``engine/vllm.py`` runs vLLM's own ``AsyncLLM`` engine with them, in the server process.

vLLM schedules, batches (continuous batching, paged KV cache), samples, detokenises and
applies stop strings; this module maps inferd's ``SamplingParams`` onto vLLM's and vLLM's
outputs back onto ``SequenceDelta``. The engine core runs in a child process that vLLM
spawns, so the event loop only ever awaits it.

Catalog ``options`` (all optional):
  dtype                  "bfloat16" (default) | "float32" | "auto"
  max_model_len          context length (default: the catalog's limits.context_length, else the model's)
  kv_cache_gib           KV-cache size in GiB (default 2). On CPUs vLLM otherwise sizes the
                         cache from a fraction of the memory it *thinks* is free, which is
                         wrong on many VMs; an explicit size also skips a warm-up pass.
  enforce_eager          true (default here; the default catalog sets false): skip torch.compile;
                         start-up drops by ~50 s, decode is 10-25% slower (docs/benchmarks.md)
  reserved_cpus          CPU build only: cores vLLM keeps free of model threads for its scheduler
                         (VLLM_CPU_NUM_OF_RESERVED_CPU). vLLM reserves one per worker; on a
                         machine of 4 cores or fewer inferd reserves none by default: measured on
                         2 cores, 32 streams went from 338 to 493 tok/s (docs/benchmarks.md)
  gpu_memory_utilization on a GPU (vLLM's CUDA build): the share of the GPU's memory vLLM takes
                         for weights and KV cache; set, it sizes the cache instead of kv_cache_gib
  tensor_parallel_size   shards one model is split over (default 1): GPUs, or on the CPU build
                         groups of cores; vLLM's own multiprocessing executor, a process per
                         shard. On Ray Serve within each replica, which asks Ray for that many
                         GPUs (docs/scale-out.md, "GPUs")
  enable_lora            serve LoRA adapters on this model (POST /v1/lora/create); with it:
  max_loras              adapters in one batch (default 4); max_lora_rank: the largest rank (16);
  max_cpu_loras          adapters kept loaded (default 16; more are reloaded when asked for)
  gguf_file, trust_remote_code, seed
The catalog's limits.max_batch_size is vLLM's max_num_seqs; limits.queue_size bounds waiting requests.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

from inferd.backends.base import Backend
from inferd.backends.transformers_lm import resolve_lm_checkpoint

log = logging.getLogger(__name__)

GiB = 1 << 30


def tensor_parallel_size(options: dict[str, Any]) -> int:
    size = int(options.get("tensor_parallel_size", 1))
    if size < 1:
        raise ValueError(f"tensor_parallel_size must be at least 1, not {size}")
    return size


BIND = "VLLM_CPU_OMP_THREADS_BIND"
_bound: str | None = None  # the binding load() set (not the user's own)


def cpu_shards(shards: int, cpus: list[int], numa_nodes: int) -> str | None:
    """The CPU build's thread binding for ``shards`` tensor-parallel shards where vLLM's own
    (``auto``: a NUMA node per shard) cannot bind them: ``cpus`` in equal groups, one a shard
    (``"0,1|2,3"``); None where it can, or for one shard."""
    if shards <= 1 or numa_nodes >= shards:
        return None
    per = len(cpus) // shards
    if per < 1:
        raise ValueError(f"tensor_parallel_size {shards} is more than the {len(cpus)} CPUs this process may use")
    return "|".join(",".join(str(c) for c in sorted(cpus)[i * per:(i + 1) * per]) for i in range(shards))


class VLLMBackend(Backend):
    """Holds the catalog entry's settings; ``engine/vllm.py`` owns vLLM itself."""

    engine = "vllm"  # the scheduler that runs it: vLLM's own (engine/pool.py)

    def load(self) -> None:
        dtype = str(self.options.get("dtype", "bfloat16"))
        # vLLM loads the fp32 checkpoint and casts it; the conversion keeps full precision
        self.checkpoint = resolve_lm_checkpoint(self.resolve(), self.options, self.cache_dir, "float32")
        self.dtype = dtype
        # read by the engine core process vLLM spawns when the engine starts, right after this
        reserved = self.options.get("reserved_cpus")
        if reserved is not None:
            os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(int(reserved))
        elif (os.cpu_count() or 1) <= 4:
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        self._bind_shards()

    def _bind_shards(self) -> None:
        """On the CPU build, split over more shards than the machine has NUMA nodes: each shard's
        threads on its share of this process's CPUs (``VLLM_CPU_OMP_THREADS_BIND``, unless the
        user set it); a later model of one shard gets vLLM's own binding back."""
        global _bound
        from vllm.platforms import current_platform

        if not current_platform.is_cpu() or (BIND in os.environ and os.environ[BIND] != _bound):
            return
        nodes = len(glob.glob("/sys/devices/system/node/node[0-9]*")) or 1
        _bound = cpu_shards(tensor_parallel_size(self.options), sorted(os.sched_getaffinity(0)), nodes)
        if _bound is None:
            os.environ.pop(BIND, None)
        else:
            os.environ[BIND] = _bound
            log.info("model %s: %s=%s (a share of the CPUs for each shard)", self.spec.id, BIND, _bound)

    @property
    def enable_lora(self) -> bool:
        return bool(self.options.get("enable_lora", False))

    def engine_args(self) -> dict[str, Any]:
        o = self.options
        shards = tensor_parallel_size(o)
        args: dict[str, Any] = {
            "model": str(self.checkpoint),
            "dtype": self.dtype,
            "max_num_seqs": self.spec.limits.max_batch_size,
            **({"gpu_memory_utilization": float(o["gpu_memory_utilization"])} if "gpu_memory_utilization" in o
               else {"kv_cache_memory_bytes": int(float(o.get("kv_cache_gib", 2)) * GiB)}),
            "tensor_parallel_size": shards,
            # a process per shard, also in a Ray Serve replica (vLLM's Ray executor there would
            # need the replica's placement group, which its engine-core process does not see)
            **({"distributed_executor_backend": "mp"} if shards > 1 else {}),
            "enforce_eager": bool(o.get("enforce_eager", True)),
            "trust_remote_code": bool(o.get("trust_remote_code", False)),
            "seed": int(o.get("seed", 0)),
            "disable_log_stats": True,
            # structured output: inferd's grammars and budget keeping, inside vLLM's sampler
            "logits_processors": ["inferd.engine.vllm_grammar:GrammarLogitsProcessor"],
        }
        if self.enable_lora:
            args.update(enable_lora=True, max_loras=int(o.get("max_loras", 4)), max_lora_rank=int(o.get("max_lora_rank", 16)),
                        max_cpu_loras=int(o.get("max_cpu_loras", 16)))
        max_len = o.get("max_model_len") or self.spec.limits.context_length
        if max_len:
            args["max_model_len"] = int(max_len)
        return args
