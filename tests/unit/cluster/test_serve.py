"""How catalog entries become Ray Serve deployments (no Ray started: the options only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inferd.catalog import Catalog, ModelSpec, Scaling
from inferd.cli import ray_address_argument
from inferd.cluster.serve import NOMINAL_CPUS, deployment_name, deployment_options, replica_settings
from inferd.settings import Settings


def ref_of(**scaling):
    spec = ModelSpec(id="org/model name", task="embeddings", backend="sentence-transformers", source="/m",
                     limits={"max_batch_size": 16, "queue_size": 100}, scaling=scaling)
    return next(Catalog([spec]).refs())


def test_fixed_replicas_and_autoscaling_from_the_catalog():
    fixed = deployment_options(ref_of(min_instances=2, max_instances=2))
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["max_ongoing_requests"] == 116  # the engine queues and answers 429 itself
    assert fixed["ray_actor_options"]["num_cpus"] == NOMINAL_CPUS and fixed["ray_actor_options"]["num_gpus"] == 0
    scaled = deployment_options(ref_of(min_instances=0, max_instances=3, num_cpus=2, num_gpus=1))
    auto = scaled["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["initial_replicas"]) == (0, 3, 0)
    assert auto["target_ongoing_requests"] == 16  # a replica's batch fills before another starts
    assert (scaled["ray_actor_options"]["num_cpus"], scaled["ray_actor_options"]["num_gpus"]) == (2, 1)


def test_deployment_names_are_safe_and_distinct():
    a, b = ref_of(), ref_of(min_instances=0)
    assert deployment_name(a) == deployment_name(b)  # the same version: the same deployment
    assert " " not in deployment_name(a) and "/" not in deployment_name(a)
    other = next(Catalog([ModelSpec(id="org/model_name", task="embeddings", backend="x", source="/m")]).refs())
    assert deployment_name(other) != deployment_name(a)  # the same once made safe, told apart by a hash


def test_a_replicas_threads_follow_its_cpus_and_paths_are_absolute():
    settings = Settings(data_dir=Path("rel"), engine_workers=2)
    assert replica_settings(settings, Scaling()).data_dir.is_absolute()
    one = replica_settings(settings, Scaling(num_cpus=1))
    assert (one.engine_workers, one.torch_threads) == (1, 1)
    four = replica_settings(settings, Scaling(num_cpus=4))
    assert (four.engine_workers, four.torch_threads) == (2, 2)


def test_scaling_bounds():
    with pytest.raises(ValidationError):
        Scaling(min_instances=3, max_instances=2)


def test_ray_address_after_the_flag():
    assert ray_address_argument(["serve", "--ray", "ray://head:10001"]) == ["serve", "--ray-address", "ray://head:10001"]
    assert ray_address_argument(["serve", "--ray", "--port", "9"]) == ["serve", "--ray", "--port", "9"]
    assert ray_address_argument(["serve", "--ray"]) == ["serve", "--ray"]


def test_a_vllm_replica_split_over_gpus_asks_ray_for_one_per_shard():
    def gpus(backend="vllm", **scaling):
        spec = ModelSpec(id="big", task="text-generation", backend=backend, source="/m",
                         options={"tensor_parallel_size": 4}, scaling=scaling)
        return deployment_options(next(Catalog([spec]).refs()))["ray_actor_options"]["num_gpus"]

    assert gpus(num_gpus=1) == 4 and gpus(num_gpus=8) == 8  # vLLM's shards: processes on the replica's GPUs
    assert gpus() == 0  # on CPUs: the shards share the replica's cores
    assert gpus("transformers", num_gpus=1) == 1
