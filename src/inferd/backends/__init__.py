"""One module per runtime; this registry maps a catalog ``backend`` name to its class.

Classes are named by import path so torch and friends load only when a model needs them.
"""

from __future__ import annotations

import importlib

from inferd.backends.base import Backend

REGISTRY: dict[str, str] = {
    "sentence-transformers": "inferd.backends.sentence_transformers:SentenceTransformerBackend",
    "cross-encoder": "inferd.backends.cross_encoder:CrossEncoderBackend",
    "lm-judge": "inferd.backends.lm_judge:LMJudgeBackend",
    "bi-encoder": "inferd.backends.bi_encoder:BiEncoderBackend",
    "transformers": "inferd.backends.transformers_lm:TransformersLMBackend",
    "vllm": "inferd.backends.vllm:VLLMBackend",
    "faster-whisper": "inferd.backends.whisper:WhisperBackend",
    "piper": "inferd.backends.piper_tts:PiperBackend",
    "kokoro": "inferd.backends.kokoro_tts:KokoroBackend",
    "diffusers": "inferd.backends.diffusers_images:DiffusersBackend",
    "clip": "inferd.backends.clip:ClipBackend",
    "image-classifier": "inferd.backends.image_classifier:ImageClassifierBackend",
    "efficientnet": "inferd.backends.efficientnet:EfficientNetBackend",
    "object-detector": "inferd.backends.object_detector:ObjectDetectorBackend",
    "transformers-text": "inferd.backends.transformers_text:TransformersTextBackend",
    "transformers-seq2seq": "inferd.backends.seq2seq:Seq2SeqBackend",
    "spacy": "inferd.backends.spacy_ner:SpacyNERBackend",
    "onnx-text": "inferd.backends.onnx_text:OnnxTextBackend",
    "embedding-classifier": "inferd.backends.embedding_classifier:EmbeddingClassifierBackend",
}


class UnknownBackend(LookupError):
    pass


def backend_class(name: str) -> type[Backend]:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise UnknownBackend(f"unknown backend {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
