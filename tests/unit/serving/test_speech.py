"""Speech answers in each dialect's shape: subtitles, languages by name, data URLs."""

from __future__ import annotations

import base64

import pytest

from inferd.errors import InputTooLarge, InvalidRequest
from inferd.serving.speech import Transcript, _language, from_data_url, openai_body


def transcript() -> Transcript:
    segments = [
        {"id": 0, "seek": 0, "start": 0.0, "end": 2.5, "text": " Hello there.", "tokens": [1], "avg_logprob": -0.1,
         "compression_ratio": 1.0, "no_speech_prob": 0.01},
        {"id": 1, "seek": 0, "start": 3661.25, "end": 3662.004, "text": " Bye.", "tokens": [2], "avg_logprob": -0.2,
         "compression_ratio": 1.0, "no_speech_prob": 0.02},
    ]
    return Transcript(ref=None, task="transcribe", duration=3663.0, language="fr", segments=segments)


def test_subtitles_and_text():
    t = transcript()
    assert openai_body(t, "srt", [], 0.0) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,004\nBye.\n\n")
    assert openai_body(t, "vtt", [], 0.0).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")
    assert openai_body(t, "text", [], 0.0) == "Hello there. Bye.\n"
    assert openai_body(t, "json", [], 0.0) == {"text": "Hello there. Bye.", "usage": {"type": "duration",
                                                                                      "seconds": 3663}}
    verbose = openai_body(t, "verbose_json", ["segment"], 0.2)
    assert verbose["language"] == "french" and verbose["segments"][1]["temperature"] == 0.2 and "words" not in verbose


def test_languages_by_code_or_name():
    assert _language("en") == "en" and _language("English") == "en" and _language(None) is None
    with pytest.raises(InvalidRequest):
        _language("klingon")


def test_data_urls():
    raw = b"RIFF0000WAVE"
    assert from_data_url("data:audio/wav;base64," + base64.b64encode(raw).decode(), 100) == raw
    assert from_data_url(base64.b64encode(raw).decode(), 100) == raw
    with pytest.raises(InvalidRequest):
        from_data_url("data:audio/wav;base64,not base64!", 100)
    with pytest.raises(InputTooLarge):
        from_data_url(base64.b64encode(b"x" * 300).decode(), 100)
