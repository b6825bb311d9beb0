"""Audio encoding for text to speech: every format decodes back to the same length, streamed
pieces join into one valid file, ElevenLabs' format names, μ-law against the standard's table."""

from __future__ import annotations

import io

import numpy as np
import pytest

from inferd.errors import InvalidRequest
from inferd.serving.synthesis import AudioEncoder, AudioFormat, _mulaw, _sized_wav, elevenlabs_format


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)


@pytest.mark.parametrize("codec", ["mp3", "opus", "aac", "flac"])
def test_encoded_in_pieces_decodes_as_one_file(codec):
    import av

    encoder = AudioEncoder(AudioFormat(codec), 22050)
    pieces = [encoder.feed(tone(0.7, 22050)) for _ in range(3)] + [encoder.close()]
    assert sum(map(len, pieces[:2])) > 0  # bytes leave before the end
    with av.open(io.BytesIO(b"".join(pieces))) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.rate
    assert abs(samples / rate - 2.1) < 0.15


def test_wav_and_pcm_resample_to_24_khz():
    encoder = AudioEncoder(AudioFormat("wav"), 22050)
    wav = encoder.feed(tone(1.0, 22050)) + encoder.close()
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt " and wav[40:44] == b"\xff\xff\xff\xff"  # streamed: size unknown
    import wave
    with wave.open(io.BytesIO(_sized_wav(wav))) as w:
        assert w.getframerate() == 24000 and abs(w.getnframes() - 24000) < 200
    pcm = AudioEncoder(AudioFormat("pcm"), 22050)
    raw = pcm.feed(tone(1.0, 22050)) + pcm.close()
    assert abs(len(raw) / 2 - 24000) < 200


def test_mulaw_matches_the_standard():
    import audioop  # the standard library's G.711 (deprecated, still in 3.11): the reference

    pcm = np.array([0, 1, -1, 100, -100, 1000, -1000, 32767, -32768, 12345, -12345], dtype="<i2")
    assert _mulaw(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)


def test_elevenlabs_formats():
    assert elevenlabs_format("mp3_44100_128") == AudioFormat("mp3", 44100, 128_000)
    assert elevenlabs_format("pcm_16000") == AudioFormat("pcm", 16000)
    assert elevenlabs_format("ulaw_8000") == AudioFormat("ulaw", 8000)
    for bad in ("mp3", "mp4_44100", "pcm_99", "opus_44100_64", "", "pcm_16000_x"):
        with pytest.raises(InvalidRequest):
            elevenlabs_format(bad)
