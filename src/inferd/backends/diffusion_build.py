"""A Stable Diffusion pipeline with random weights, built from a ``pipeline.json`` of configs.

The default catalog's ``inferd/tiny-sd-random`` is one: no diffusion checkpoint installs offline,
yet every image route must work on a fresh machine, so the configs ship with inferd and the
weights are drawn (from a fixed seed) and saved once under the cache directory. It draws noise,
fast, at any size. The benchmark builds a real architecture's shape the same way.

``pipeline.json``: ``seed``, ``unet`` (``UNet2DConditionModel``), ``vae`` (``AutoencoderKL``, or another
class named by ``_class_name``),
``text_encoder`` (``CLIPTextConfig``; its vocabulary is the tokenizer's), ``scheduler``
(``_class_name`` and its config), and optional ``default_steps``. The tokenizer is CLIP's
byte-level BPE with no merges (every byte one token): real code, a vocabulary of 514.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

SPEC = "pipeline.json"
BUILDER = 3  # bump when the build changes: pipelines built before are built again


def is_random_spec(path: Path) -> bool:
    return path.is_dir() and (path / SPEC).is_file()


def built_path(spec_dir: Path, cache_dir: Path) -> Path:
    """Where the pipeline of ``spec_dir`` is (built now if it is not there yet)."""
    text = (spec_dir / SPEC).read_text()
    digest = hashlib.sha256(f"{BUILDER}\n{text}".encode()).hexdigest()[:12]
    out = cache_dir / "pipelines" / f"{spec_dir.name}-{digest}"
    if (out / "model_index.json").is_file():
        return out
    spec = json.loads(text)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("building the random-weight pipeline %s into %s", spec_dir.name, out)
    _build(spec, tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _vocabulary() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def _build(spec: dict, out: Path) -> None:
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(int(spec.get("seed", 0)))
    tokenizer = CLIPTokenizer(vocab=_vocabulary(), merges=[],
                              model_max_length=spec["text_encoder"].get("max_position_embeddings", 77))
    text_config = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                 **spec["text_encoder"])
    scheduler_config = dict(spec["scheduler"])
    scheduler_class = getattr(diffusers, scheduler_config.pop("_class_name"))
    vae_config = dict(spec["vae"])
    vae_class = getattr(diffusers, vae_config.pop("_class_name", "AutoencoderKL"))  # or AutoencoderTiny (TAESD)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae_class(**vae_config),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=diffusers.UNet2DConditionModel(**spec["unet"]),
        scheduler=scheduler_class.from_config(scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)
    extra = {k: spec[k] for k in ("default_steps",) if k in spec}
    (out / "inferd.json").write_text(json.dumps({"random_weights": True, **extra}))
