"""Speech through the clients people use, against `inferd serve` on the default catalog
(whisper base as `whisper-1`, whisper tiny.en, the Piper voice as `tts-1`): speech to text
from the openai SDK (every response format, translations, a streamed transcript), LiteLLM and
curl on the OpenAI and native routes; text to speech from the openai SDK (streamed as it is
made) and curl; the round trip gives the words back."""

from __future__ import annotations

import base64
import json
import time

import pytest
from openai import OpenAI

from tests.audio import SENTENCES, encode, speak, word_error_rate
from tests.e2e.test_clients import curl, has_curl  # noqa: F401

TEXT = SENTENCES[0]


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("speech") / "fox.wav"
    path.write_bytes(speak(TEXT))
    return path


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=f"{server.base_url}/v1/openai", api_key=server.token, max_retries=0)


def test_openai_sdk_transcribes_in_every_format(client, wav):
    with wav.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert word_error_rate(TEXT, result.text) <= 0.15
    for response_format in ("text", "srt", "vtt"):
        with wav.open("rb") as f:
            text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format=response_format)
        cues = [line for line in text.splitlines() if line and "-->" not in line and not line.isdigit()
                and line != "WEBVTT"]
        assert isinstance(text, str) and word_error_rate(TEXT, " ".join(cues)) <= 0.15
    with wav.open("rb") as f:
        verbose = client.audio.transcriptions.create(model="openai/whisper-tiny.en", file=f,
                                                     response_format="verbose_json",
                                                     timestamp_granularities=["word", "segment"])
    assert verbose.language == "english" and verbose.duration > 2
    assert [w.word.lower().strip(".") for w in verbose.words][:2] == ["the", "quick"]
    assert verbose.segments[0].start == 0.0 and verbose.segments[-1].end <= verbose.duration + 0.1


def test_openai_sdk_translates_and_streams(client, wav):
    with wav.open("rb") as f:
        result = client.audio.translations.create(model="whisper-1", file=f)
    assert word_error_rate(TEXT, result.text) <= 0.15
    with wav.open("rb") as f:
        events = list(client.audio.transcriptions.create(model="openai/whisper-tiny.en", file=f, stream=True))
    assert events[-1].type == "transcript.text.done" and word_error_rate(TEXT, events[-1].text) <= 0.15
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta").strip() == events[-1].text


def test_litellm_transcription(server, wav):
    import litellm

    with wav.open("rb") as f:
        result = litellm.transcription(model="openai/whisper-1", file=f, api_base=f"{server.base_url}/v1/openai",
                                       api_key=server.token)
    assert word_error_rate(TEXT, result.text) <= 0.15


def test_curl_multipart_and_a_data_url_on_the_native_route(server, wav, has_curl):  # noqa: F811
    auth = f"Authorization: Bearer {server.token}"
    status, body = curl(f"{server.base_url}/v1/openai/audio/transcriptions", "-H", auth,
                        "-F", f"file=@{wav}", "-F", "model=whisper-1")
    assert status == 200 and word_error_rate(TEXT, body["text"]) <= 0.15
    status, body = curl(f"{server.base_url}/v1/inference/openai/whisper-tiny.en", "-H", auth,
                        "-F", f"audio=@{wav}", "-F", "chunk_level=word")
    assert status == 200 and word_error_rate(TEXT, body["text"]) <= 0.15 and body["words"]
    mp3 = "data:audio/mpeg;base64," + base64.b64encode(encode(wav.read_bytes(), "mp3")).decode()
    status, body = curl(f"{server.base_url}/v1/inference/openai/whisper-base", "-H", auth,
                        "-H", "Content-Type: application/json", "-d", json.dumps({"audio": mp3, "task": "translate"}))
    assert status == 200 and word_error_rate(TEXT, body["text"]) <= 0.15
    assert body["inference_status"]["cost"] > 0 and body["input_length_ms"] > 2000
    status, body = curl(f"{server.base_url}/v1/openai/audio/transcriptions", "-F", f"file=@{wav}",
                        "-F", "model=whisper-1")
    assert status == 401


def test_openai_sdk_speaks_streaming_as_it_is_made_and_the_words_come_back(client, tmp_path):
    text = ("The weather is lovely today. We are going to the beach this afternoon. "
            "Bring a towel and some water. ") * 3
    began = time.perf_counter()
    arrivals = []
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=text,
                                                            response_format="mp3") as response:
        out = tmp_path / "speech.mp3"
        with out.open("wb") as f:
            for chunk in response.iter_bytes(1024):
                arrivals.append(time.perf_counter() - began)
                f.write(chunk)
    assert arrivals[0] < 1.0  # the first sentence's audio, long before the last is made
    assert arrivals[0] < arrivals[-1] / 3  # (in the first third of the stream's time: speed-independent)
    with out.open("rb") as f:
        heard = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert word_error_rate(text, heard.text) <= 0.15


def test_curl_speaks_on_the_openai_and_elevenlabs_routes(server, tmp_path, has_curl):  # noqa: F811
    import subprocess

    out = tmp_path / "speech.wav"
    subprocess.run(["curl", "-sS", "-f", f"{server.base_url}/v1/openai/audio/speech", "-H",
                    f"Authorization: Bearer {server.token}", "-H", "Content-Type: application/json",
                    "-d", json.dumps({"model": "tts-1", "input": TEXT, "voice": "onyx", "response_format": "wav"}),
                    "-o", str(out)], check=True)
    status, body = curl(f"{server.base_url}/v1/openai/audio/transcriptions", "-H", f"Authorization: Bearer {server.token}",
                        "-F", f"file=@{out}", "-F", "model=whisper-1")
    assert status == 200 and word_error_rate(TEXT, body["text"]) <= 0.15
    status, voices = curl(f"{server.base_url}/v1/voices", "-H", f"xi-api-key: {server.token}")
    assert status == 200 and voices["voices"][0]["voice_id"] == "en_US-joe-medium"
    subprocess.run(["curl", "-sS", "-f", f"{server.base_url}/v1/text-to-speech/en_US-joe-medium/stream",
                    "-H", f"xi-api-key: {server.token}", "-H", "Content-Type: application/json",
                    "-d", json.dumps({"text": TEXT}), "-o", str(tmp_path / "eleven.mp3")], check=True)
    status, body = curl(f"{server.base_url}/v1/openai/audio/transcriptions", "-H", f"Authorization: Bearer {server.token}",
                        "-F", f"file=@{tmp_path / 'eleven.mp3'}", "-F", "model=whisper-1")
    assert status == 200 and word_error_rate(TEXT, body["text"]) <= 0.15
