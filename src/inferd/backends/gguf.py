"""GGUF files -> a transformers checkpoint, converted once and cached on disk.

transformers reads a GGUF file by dequantising every tensor, which takes seconds to minutes;
both LLM runtimes (transformers and vLLM) then load the cached fp32/bf16 checkpoint, which
takes a fraction of a second. The cache key covers the file (name, size, modification time),
the dtype and the transformers version, so a changed file or library converts again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_DONE = ".inferd-converted"


def cache_key(gguf_file: Path, dtype: str) -> str:
    import transformers

    stat = gguf_file.stat()
    fingerprint = f"{gguf_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}|{transformers.__version__}"
    return f"{gguf_file.stem}-{dtype}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:16]}"


def gguf_checkpoint(gguf_file: Path, cache_root: Path, dtype: str = "float32", progress: bool = True) -> Path:
    """The transformers checkpoint directory for ``gguf_file``, converting it on first use.

    The conversion writes into a temporary directory beside the cache entry and renames it
    into place when complete, so an interrupted conversion never leaves a half checkpoint.
    """
    gguf_file = Path(gguf_file)
    if gguf_file.suffix != ".gguf" or not gguf_file.is_file():
        raise ValueError(f"{gguf_file} is not a .gguf file")
    target = Path(cache_root) / cache_key(gguf_file, dtype)
    if (target / _DONE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert(gguf_file, work, dtype, progress)
        (work / _DONE).write_text(str(gguf_file))
        if target.exists():  # a stale, incomplete entry
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _convert(gguf_file: Path, out: Path, dtype: str, progress: bool) -> None:
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=3, desc=f"converting {gguf_file.name}", unit="step", disable=not progress)
    log.info("converting %s to a %s checkpoint in %s (once; cached)", gguf_file.name, dtype, out.parent)
    steps.set_postfix_str("tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    steps.update()
    steps.set_postfix_str("dequantising weights")
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=getattr(torch, dtype)
    )
    steps.update()
    steps.set_postfix_str("saving")
    # the dequantised model is a plain one now: drop the GGUF quantiser so it serialises
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    steps.update()
    steps.close()
