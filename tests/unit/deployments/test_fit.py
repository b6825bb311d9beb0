"""Memory estimates from the weight files' own headers."""

from __future__ import annotations

import json
import struct

from inferd.deployments import fit


def _safetensors(path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    header = json.dumps({"__metadata__": {"format": "pt"}, **{
        name: {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]} for name, (dtype, shape) in tensors.items()}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode())


def test_parameters_come_from_the_headers_and_the_dtype_sets_the_bytes(tmp_path):
    _safetensors(tmp_path / "model-1.safetensors", {"a": ("F32", [1000, 1000]), "b": ("F32", [1000])})
    _safetensors(tmp_path / "model-2.safetensors", {"c": ("BF16", [500, 2])})
    assert fit.count_parameters(tmp_path) == 1_000_000 + 1000 + 1000
    est = fit.estimate(tmp_path, "embeddings", "sentence-transformers", {}, 32, None)
    assert est.weights == 1_002_000 * 4 and est.runtime == fit.RUNTIME_MARGIN and est.parameters == 1_002_000
    vllm = fit.estimate(tmp_path, "text-generation", "vllm", {"kv_cache_gib": 1}, 32, None)
    assert vllm.weights == 1_002_000 * 2  # vLLM runs bfloat16 unless told
    assert vllm.runtime == fit.RUNTIME_MARGIN + fit.GiB + fit.VLLM_PROCESS


def test_the_transformers_runtime_counts_a_full_batchs_kv_cache(tmp_path):
    _safetensors(tmp_path / "model.safetensors", {"w": ("F32", [10, 10])})
    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64,
        "max_position_embeddings": 4096}))
    est = fit.estimate(tmp_path, "text-generation", "transformers", {}, 8, 512)
    assert est.runtime - fit.RUNTIME_MARGIN == 2 * 2 * 2 * 16 * 512 * 8 * 4  # k and v, layers, heads, dim, len, batch


def test_gguf_parameters(smollm2_gguf):
    assert 130e6 < fit.count_parameters(smollm2_gguf) < 140e6  # SmolLM2-135M


def test_files_without_headers_count_by_size(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 4096)
    (tmp_path / "README.md").write_text("x" * 100)
    assert fit.estimate(tmp_path, "embeddings", "x", {}, 1, None).weights == 4096


def test_weights_whose_header_does_not_read_count_by_size(tmp_path):
    # zeros where the header's length and JSON go, and a length past any real header: the estimate
    # goes by the files' sizes (loading then says what is wrong), never a server error
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4096)
    assert fit.estimate(tmp_path, "fill-mask", "x", {}, 1, None).weights == 4096
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 4096)
    assert fit.count_parameters(tmp_path) == 0
