"""The vLLM runtime's engine arguments from a catalog entry's options (no engine started)."""

from __future__ import annotations

import pytest

from inferd.backends.vllm import GiB, VLLMBackend, cpu_shards
from inferd.catalog import ModelSpec


def args_of(**options):
    spec = ModelSpec(id="m", task="text-generation", backend="vllm", source="/m", limits={"max_batch_size": 8},
                     options=options)
    backend = VLLMBackend(spec, "/m", dict(options))
    backend.checkpoint, backend.dtype = "/m", "bfloat16"  # what load() finds
    return backend.engine_args()


def test_the_kv_cache_is_sized_in_gib_unless_a_gpu_share_is_given():
    plain = args_of()
    assert plain["kv_cache_memory_bytes"] == 2 * GiB and "gpu_memory_utilization" not in plain
    assert plain["tensor_parallel_size"] == 1 and plain["max_num_seqs"] == 8
    gpu = args_of(gpu_memory_utilization=0.85, tensor_parallel_size=2)
    assert gpu["gpu_memory_utilization"] == 0.85 and "kv_cache_memory_bytes" not in gpu
    assert gpu["tensor_parallel_size"] == 2
    # a process per shard (also in a Ray Serve replica: not vLLM's Ray executor)
    assert gpu["distributed_executor_backend"] == "mp" and "distributed_executor_backend" not in plain


def test_a_tensor_parallel_size_below_one_is_refused():
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        args_of(tensor_parallel_size=0)


def test_shards_on_cpus_get_a_share_of_the_cpus_each_where_numa_nodes_are_too_few():
    assert cpu_shards(2, [0, 1], numa_nodes=1) == "0|1"
    assert cpu_shards(2, [3, 0, 1, 2, 4], numa_nodes=1) == "0,1|2,3"  # equal shares; one CPU left over
    assert cpu_shards(2, list(range(8)), numa_nodes=2) is None  # vLLM binds a NUMA node each itself
    assert cpu_shards(1, [0, 1], numa_nodes=1) is None
    with pytest.raises(ValueError, match="more than the 2 CPUs"):
        cpu_shards(4, [0, 1], numa_nodes=1)
