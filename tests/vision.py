"""Tiny random-weight vision models built from configs (no CLIP, ViT or DETR-style checkpoint
installs offline), each saved with its real tokenizer/image-processor classes, and real photos
(the two that scikit-learn ships)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def build_tiny_clip(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from inferd.backends.diffusion_build import _vocabulary

    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer(vocab=_vocabulary(), merges=[], model_max_length=77)
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(text_config={**layers, "vocab_size": len(tokenizer), "max_position_embeddings": 77,
                                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                                     "pad_token_id": tokenizer.pad_token_id},
                        vision_config={**layers, "image_size": 32, "patch_size": 8}, projection_dim=16)
    CLIPModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def build_tiny_vit_classifier(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=37, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def build_tiny_yolos(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    config = YolosConfig(image_size=[64, 64], patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, num_detection_tokens=5, num_labels=3, id2label=LABELS,
                         label2id={v: k for k, v in LABELS.items()})
    YolosForObjectDetection(config).save_pretrained(out)
    YolosImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(out)
    return out


def photo(name: str = "china.jpg") -> Image.Image:
    """A real photograph (scikit-learn ships china.jpg, a temple, and flower.jpg)."""
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
