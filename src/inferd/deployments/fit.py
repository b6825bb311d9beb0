"""Will a model fit? Its memory estimated before it loads, and the memory left to load it in.

A model's memory is its weights as the runtime holds them (parameters, counted from the files'
own headers, times the bytes per parameter of the dtype it runs in) plus what the runtime needs
beside them: vLLM's KV cache (its ``kv_cache_gib``) and engine process, the transformers
runtime's KV cache for a full batch at the model's context, and a margin for activations and
the runtime's own libraries. What is left is the least of: what the machine reports available,
what the container (cgroup v2) still allows, and what the ``deploy_memory_gib`` budget has not
given to other deployments; less ``memory_reserve_gib`` kept for the server itself.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

GiB = 1 << 30
MiB = 1 << 20
RUNTIME_MARGIN = 256 * MiB  # activations, tokenizer, the runtime's buffers
VLLM_PROCESS = 768 * MiB  # vLLM's engine core process: its libraries, compiled graphs, sampler
_BYTES = {"float32": 4, "float": 4, "fp32": 4, "auto": 4, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2,
          "bf16": 2, "int8": 1}
_SAFETENSORS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf", ".ckpt", ".msgpack", ".h5")


@dataclass(frozen=True, slots=True)
class Estimate:
    weights: int  # bytes the weights take once loaded
    runtime: int  # bytes beside them: KV cache, engine process, margin
    parameters: int | None  # counted from the headers; None when only file sizes were known

    @property
    def total(self) -> int:
        return self.weights + self.runtime

    def describe(self) -> str:
        params = f"{self.parameters / 1e6:.0f}M parameters, " if self.parameters else ""
        return f"{gib(self.total)} ({params}weights {gib(self.weights)} + runtime {gib(self.runtime)})"


def gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def estimate(path: Path, task: str, backend: str, options: dict[str, Any], max_batch_size: int,
             context_length: int | None) -> Estimate:
    """The memory ``path``'s model takes loaded by ``backend`` with these settings."""
    dtype = str(options.get("dtype") or ("bfloat16" if backend == "vllm" else "float32"))
    per_param = _BYTES.get(dtype.lower(), 4)
    parameters = count_parameters(path)
    weights = parameters * per_param if parameters else _file_bytes(path)
    runtime = RUNTIME_MARGIN
    if backend == "vllm":
        if "gpu_memory_utilization" not in options:  # on a GPU the cache is on the GPU
            runtime += int(float(options.get("kv_cache_gib", 2)) * GiB)
        runtime += VLLM_PROCESS
    elif task == "text-generation":
        runtime += _kv_cache_bytes(path, per_param, max_batch_size, context_length)
    return Estimate(weights, runtime, parameters or None)


def count_parameters(path: Path) -> int:
    """Parameters in the weight files under ``path`` (safetensors and GGUF headers), 0 when
    none of its files has a header that says, or one of them has a header that does not read (the
    estimate then goes by the files' sizes, and loading says what is wrong with them)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = 0
    for file in files:
        try:
            if file.suffix == ".safetensors":
                total += _safetensors_parameters(file)
            elif file.suffix == ".gguf":
                total += _gguf_parameters(file)
        except (ValueError, TypeError, KeyError, AttributeError, struct.error, OSError) as exc:
            log.warning("%s: its header does not read (%s); estimating by file sizes", file.name, exc)
            return 0
    return total


def _safetensors_parameters(file: Path) -> int:
    with file.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100 * MiB:
            raise ValueError(f"{file.name}: a safetensors header of {length} bytes")
        header = json.loads(f.read(length))
    count = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for dim in info.get("shape", ()):
            n *= int(dim)
        count += n
    return count


def _gguf_parameters(file: Path) -> int:
    from gguf import GGUFReader

    return sum(int(t.n_elements) for t in GGUFReader(file).tensors)


def _file_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHTS) or \
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _kv_cache_bytes(path: Path, per_param: int, batch: int, context: int | None) -> int:
    """Keys and values of every layer for a full batch at the context length (config.json's shape)."""
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return 0
    layers = int(config.get("num_hidden_layers") or 0)
    heads = int(config.get("num_attention_heads") or 1)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config.get("hidden_size") or 0) // heads)
    length = min(int(context or 10**9), int(config.get("max_position_embeddings") or 2048))
    return 2 * layers * kv_heads * head_dim * length * batch * per_param


def available_bytes() -> int:
    """Memory this process may still take: the machine's available memory, cut to what the
    container's cgroup (v2) still allows."""
    free = psutil.virtual_memory().available
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, free)
