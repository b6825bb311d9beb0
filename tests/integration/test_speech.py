"""Speech to text in process, on the shipped whisper models (tiny.en and base) and speech made
by the shipped Piper voice: OpenAI's audio routes in every response format, the native
route (multipart and data URL), every container clients send, translations, long audio,
concurrency, and bad audio."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from sqlalchemy import select

from inferd.accounts.models import UsageRecord
from inferd.catalog import Task, load_catalog
from inferd.catalog.catalog import Catalog
from tests.audio import FORMATS, SENTENCES, encode, record_batches, samples, speak, to_wav, word_error_rate
from tests.conftest import make_settings, start_app

TRANSCRIBE = "/v1/openai/audio/transcriptions"
TRANSLATE = "/v1/openai/audio/translations"
BASE, TINY = "openai/whisper-base", "openai/whisper-tiny.en"
MAX_AUDIO = 4 << 20


@pytest.fixture(scope="module")
async def speech(tmp_path_factory):
    catalog = Catalog([s for s in load_catalog() if s.task is Task.AUTOMATIC_SPEECH_RECOGNITION])
    settings = make_settings(tmp_path_factory.mktemp("speech"), max_audio_bytes=MAX_AUDIO, max_audio_seconds=600)
    async for h in start_app(settings, catalog):
        yield h


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    return {text: speak(text) for text in SENTENCES}


async def transcribe(client, audio: bytes, name="speech.wav", url=TRANSCRIBE, **fields):
    fields.setdefault("model", TINY)
    return await client.post(url, files={"file": (name, audio)}, data=fields)


async def test_every_response_format(speech, clips):
    text, wav = next(iter(clips.items()))
    r = await transcribe(speech.client, wav)
    assert r.status_code == 200, r.text
    body = r.json()
    assert word_error_rate(text, body["text"]) <= 0.15 and body["usage"]["type"] == "duration"
    r = await transcribe(speech.client, wav, response_format="text")
    assert r.headers["content-type"].startswith("text/plain") and word_error_rate(text, r.text) <= 0.15
    srt = (await transcribe(speech.client, wav, response_format="srt")).text
    assert srt.startswith("1\n00:00:0") and " --> " in srt and "," in srt.splitlines()[1]
    vtt = (await transcribe(speech.client, wav, response_format="vtt")).text
    assert vtt.startswith("WEBVTT\n\n00:00:0") and "." in vtt.splitlines()[2]
    r = await speech.client.post(TRANSCRIBE, files={"file": ("a.wav", wav)},
                                 data={"model": TINY, "response_format": "verbose_json",
                                       "timestamp_granularities[]": ["word", "segment"]})
    verbose = r.json()
    assert verbose["task"] == "transcribe" and verbose["language"] == "english"
    assert abs(verbose["duration"] - len(samples(wav)[0]) / samples(wav)[1]) < 0.05
    segment = verbose["segments"][0]
    assert {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
            "no_speech_prob"} <= set(segment)
    assert [w["word"].lower().strip(".,") for w in verbose["words"]][:3] == ["the", "quick", "brown"]
    assert all(a["start"] <= a["end"] <= b["start"] + 0.01 for a, b in zip(verbose["words"], verbose["words"][1:]))


@pytest.mark.parametrize("container", sorted(FORMATS))
async def test_every_container_clients_send(speech, clips, container):
    text, wav = list(clips.items())[1]
    r = await transcribe(speech.client, encode(wav, container), name=f"speech.{container}")
    assert r.status_code == 200, r.text
    assert word_error_rate(text, r.json()["text"]) <= 0.15


async def test_translation_and_language_detection_need_the_multilingual_model(speech, clips):
    text, wav = list(clips.items())[1]
    r = await transcribe(speech.client, wav, url=TRANSLATE, model="whisper-1")  # OpenAI's model name: whisper base
    assert r.status_code == 200, r.text
    assert word_error_rate(text, r.json()["text"]) <= 0.15
    r = await transcribe(speech.client, wav, model=BASE, response_format="verbose_json")
    assert r.json()["language"] == "english"  # detected
    r = await transcribe(speech.client, wav, url=TRANSLATE, model=TINY)
    assert r.status_code == 400 and "cannot translate" in r.json()["error"]["message"]
    r = await transcribe(speech.client, wav, model=BASE, language="klingon")
    assert r.status_code == 400 and r.json()["error"]["param"] == "language"


async def test_native_route_multipart_data_url_words_and_the_bill(speech, clips):
    text, wav = list(clips.items())[2]
    r = await speech.client.post(f"/v1/inference/{TINY}", files={"audio": ("a.wav", wav)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert word_error_rate(text, body["text"]) <= 0.15 and body["language"] == "en"
    assert body["input_length_ms"] == round(len(samples(wav)[0]) / samples(wav)[1] * 1000)
    assert body["segments"][0]["id"] == 0 and body["inference_status"]["status"] == "succeeded"
    # a data URL in JSON, with word timestamps
    url = "data:audio/wav;base64," + base64.b64encode(wav).decode()
    r = await speech.client.post(f"/v1/inference/{TINY}", json={"audio": url, "chunk_level": "word"})
    assert r.status_code == 200, r.text
    words = r.json()["words"]
    assert len(words) >= 8 and all({"text", "start", "end", "confidence"} <= set(w) for w in words)
    # the response's cost is the stored row's, billed by the second of audio
    await speech.state.usage.flush()
    async with speech.state.db.sessions() as session:
        row = await session.scalar(select(UsageRecord).where(UsageRecord.request_id == r.headers["x-request-id"]))
    assert row.pricing_type == "input_length" and abs(row.input_seconds - body["input_length_ms"] / 1000) < 0.01
    assert row.cost_nano_usd > 0 and r.json()["inference_status"]["cost"] == row.cost_nano_usd / 1e9


async def test_a_streamed_transcript(speech, clips):
    text, wav = list(clips.items())[0]
    events = []
    async with speech.client.stream("POST", TRANSCRIBE, files={"file": ("a.wav", wav)},
                                    data={"model": TINY, "stream": "true"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    assert [e["type"] for e in events][-1] == "transcript.text.done"
    assert "".join(e["delta"] for e in events[:-1]).strip() == events[-1]["text"]
    assert word_error_rate(text, events[-1]["text"]) <= 0.15


async def test_long_audio_is_cut_at_pauses_and_times_are_the_original_ones(speech, clips, monkeypatch):
    monkeypatch.setattr(speech.state.speech, "block_seconds", 20.0)  # decoded and cut 20 s at a time
    rate = samples(next(iter(clips.values())))[1]
    pieces, starts, at = [], [], 0
    for wav in list(clips.values()) * 3:  # 12 sentences with 4 s of silence between: > 30 s, several chunks
        pcm = samples(wav)[0]
        starts.append(at / rate)
        pieces += [pcm, np.zeros(4 * rate, np.int16)]
        at += len(pcm) + 4 * rate
    r = await transcribe(speech.client, to_wav(np.concatenate(pieces), rate), response_format="verbose_json")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration"] > 60
    assert word_error_rate(" ".join(SENTENCES * 3), body["text"]) <= 0.15
    segments = body["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert all(a["end"] <= b["start"] + 0.01 for a, b in zip(segments, segments[1:]))
    # segments start where the sentences do in the original audio (whisper may join two into one)
    found = sum(any(abs(s["start"] - t) < 1.0 for s in segments) for t in starts)
    assert found >= 10, ([s["start"] for s in segments], starts)
    assert abs(segments[-1]["end"] - (at / rate - 4)) < 1.5  # the last ends where the speech does


async def test_sixteen_clients_at_once_get_their_own_text_in_shared_batches(speech, clips, monkeypatch):
    batches = record_batches(monkeypatch, speech.state.pool.get(TINY).backend)
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(16)]
    answers = await asyncio.gather(*(transcribe(speech.client, clips[t]) for t in texts))
    for text, r in zip(texts, answers, strict=True):
        assert r.status_code == 200 and word_error_rate(text, r.json()["text"]) <= 0.15
    sizes = [n for n, _ in batches]
    assert max(sizes) > 1 and sum(sizes) == 16  # chunks of different requests shared passes


@pytest.mark.parametrize(("audio", "status", "says"), [
    (b"", 400, "empty"),
    (b"this is not audio at all" * 10, 400, "could not be decoded"),
    ("header", 400, "empty"),  # a WAV header and no samples: 0 s
    ("truncated", 200, ""),  # cut mid-way: what is there is transcribed
    ("huge", 413, "larger"),
])
async def test_bad_audio_is_a_clear_4xx_and_the_server_goes_on(speech, clips, audio, status, says):
    wav = next(iter(clips.values()))
    audio = {"header": wav[:44], "truncated": wav[: len(wav) // 2], "huge": b"\0" * (MAX_AUDIO + 1)}.get(audio, audio)
    r = await transcribe(speech.client, audio)
    assert r.status_code == status, r.text
    if says:
        assert says in r.json()["error"]["message"]
    r = await transcribe(speech.client, wav)  # others are untouched
    assert r.status_code == 200


async def test_bad_fields_are_4xx_in_each_dialect(speech, clips):
    wav = next(iter(clips.values()))
    r = await speech.client.post(TRANSCRIBE, data={"model": TINY})  # no file
    assert r.status_code in (400, 422)
    r = await transcribe(speech.client, wav, response_format="mp4")
    assert r.status_code in (400, 422)
    r = await transcribe(speech.client, wav, temperature="7")
    assert r.status_code in (400, 422)
    r = await speech.client.post(f"/v1/inference/{TINY}", json={"audio": "not base64 !!"})
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = await speech.client.post(f"/v1/inference/{TINY}", json={"audio": 12})
    assert r.status_code == 400
    r = await transcribe(speech.client, wav, model="no-such-model")
    assert r.status_code == 404
