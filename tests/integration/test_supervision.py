"""Supervision: an encoder loop, the transformers scheduler thread or vLLM's engine process
that dies is noticed within a second; its waiting requests fail at once with 503, the model
shows `failed` with the reason, `/health` answers 503, and the model comes back by itself."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil
import pytest

from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import MINILM, make_settings, start_app

CHAT = "/v1/openai/chat/completions"
HI = [{"role": "user", "content": "hi"}]


async def wait_for(predicate, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture(scope="module")
async def sup(tmp_path_factory, minilm_path, tiny_lm_dir, tiny_vllm_lm_dir):
    catalog = Catalog([
        ModelSpec(id=MINILM, task="embeddings", backend="sentence-transformers", source=str(minilm_path)),
        ModelSpec(id="tiny", task="text-generation", backend="transformers", source=str(tiny_lm_dir),
                  limits={"context_length": 256}),
        ModelSpec(id="tiny-vllm", task="text-generation", backend="vllm", source=str(tiny_vllm_lm_dir),
                  limits={"context_length": 256, "max_batch_size": 8},
                  options={"dtype": "float32", "enforce_eager": True, "kv_cache_gib": 0.25}),
    ])
    async for h in start_app(make_settings(tmp_path_factory.mktemp("sup")), catalog):
        for engine in h.state.pool.engines():
            assert engine.state.value == "ready", engine.error
        yield h


async def test_a_dead_encoder_loop_fails_the_model_and_it_comes_back(sup):
    engine = sup.state.pool.get(MINILM)
    engine._tasks[-1].cancel()  # a forward loop dies
    took = await wait_for(lambda: engine.state.value == "failed", 1.0)
    assert took < 1.0 and "forward" in engine.error
    health = await sup.client.get("/health")
    [status] = [m for key, m in health.json()["models"].items() if key.startswith(MINILM)]
    assert health.status_code == 503 and status["status"] == "failed" and "forward" in status["error"]
    r = await sup.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": "hi"})
    assert r.status_code == 503
    await wait_for(lambda: engine.state.value == "ready", 60)
    r = await sup.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": "hi"})
    assert r.status_code == 200


async def test_a_dead_scheduler_thread_fails_its_requests_with_503_and_restarts(sup, monkeypatch):
    engine = sup.state.pool.get("tiny")
    admit = engine._admit
    calls = 0

    def dies_once():
        nonlocal calls
        calls += 1
        if calls == 1:
            engine._waiting.clear()  # the thread dies with a request taken off the queue...
            raise RuntimeError("scheduler bug")
        return admit()

    waiting = asyncio.create_task(sup.client.post(CHAT, json={"model": "tiny", "messages": HI, "max_tokens": 4}))
    monkeypatch.setattr(engine, "_admit", dies_once)
    started = time.monotonic()
    r = await waiting  # ...and its caller hears of it within a second, not never
    assert r.status_code == 503 and time.monotonic() - started < 1.5, r.text
    assert engine.state.value in ("failed", "loading")
    monkeypatch.undo()
    await wait_for(lambda: engine.state.value == "ready", 60)
    r = await sup.client.post(CHAT, json={"model": "tiny", "messages": HI, "max_tokens": 4})
    assert r.status_code == 200


async def test_a_killed_vllm_engine_process_fails_waiting_requests_with_503_and_comes_back(sup):
    engine = sup.state.pool.get("tiny-vllm")
    body = {"model": "tiny-vllm", "messages": HI, "max_tokens": 200, "ignore_eos": True}
    waiting = [asyncio.create_task(sup.client.post(CHAT, json=body)) for _ in range(4)]
    await asyncio.sleep(0.3)
    # this app's engine process is a child of the test's own process (the vLLM engines of servers other
    # tests started are their grandchildren, and stay alive), with its workers under it
    cores = [p for p in psutil.Process(os.getpid()).children() if "EngineCore" in " ".join(p.cmdline())
             or p.name().startswith("VLLM")]
    cores += [child for p in cores for child in p.children(recursive=True)]
    assert cores, "no vLLM engine process found"
    killed = time.monotonic()
    for process in cores:
        os.kill(process.pid, signal.SIGKILL)
    answers = await asyncio.gather(*waiting)
    assert all(r.status_code == 503 for r in answers), [r.text for r in answers]
    assert time.monotonic() - killed < 1.5
    assert "engine process died" in answers[0].json()["error"]["message"]
    await wait_for(lambda: engine.state.value == "failed", 1.0)
    await wait_for(lambda: engine.state.value == "ready", 240)
    r = await sup.client.post(CHAT, json={**body, "max_tokens": 4})
    assert r.status_code == 200, r.text


async def test_a_request_that_fails_a_step_fails_alone(sup, monkeypatch):
    """One request's sequence raises inside a shared step: it fails alone (500), the others in
    the same batch run to the end with every token (transformers runtime)."""
    engine = sup.state.pool.get("tiny")
    advance = engine._advance

    def poisoned(seq, token, logprob):
        if seq.row.params.max_tokens == 7 and len(seq.row.output_ids) >= 3:
            raise RuntimeError("this request breaks the step")
        return advance(seq, token, logprob)

    monkeypatch.setattr(engine, "_advance", poisoned)
    body = {"model": "tiny", "messages": HI, "ignore_eos": True}
    calls = [sup.client.post(CHAT, json={**body, "max_tokens": 30}) for _ in range(4)]
    calls.insert(2, sup.client.post(CHAT, json={**body, "max_tokens": 7}))
    answers = await asyncio.gather(*calls)
    poison = answers.pop(2)
    assert poison.status_code == 500 and "generation failed" in poison.json()["error"]["message"]
    for r in answers:
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 30, r.text
    assert engine.state.value == "ready"
