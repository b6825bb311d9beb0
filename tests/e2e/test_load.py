"""Under load, a real `inferd serve` keeps its clients' keep-alive connections open, admits only
what its queues hold (200 or 429 with Retry-After, never a hang or a 5xx), and answers /health
within 100 ms (99 probes in 100; none stalls as long as a full garbage collection would)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import aiohttp
import httpx
import psutil
import pytest

from tests.conftest import MINILM, REPO
from tests.e2e.conftest import RemoteServer, default_models, write_catalog


PROBE = str(REPO / "benchmarks" / "probe.py")  # GET a URL every 50 ms, print each round trip


RERANKER = "inferd/minilm-bi-encoder-reranker"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory):
    """The default catalog's three tasks with small queues, so 10x the queue is a load a test can
    send: MiniLM and the reranker queue 64 inputs; SmolLM2 on vLLM runs 8 and queues 8."""
    tmp = tmp_path_factory.mktemp("load")
    models = default_models("embeddings", "reranker", "text-generation")
    for model in models:
        if model["task"] == "text-generation":
            model["limits"].update(max_batch_size=8, queue_size=8)
            model["options"].update(kv_cache_gib=1, enforce_eager=True)  # no compile: a shorter start
        else:
            model["limits"]["queue_size"] = 64
    path = write_catalog(tmp / "catalog.yaml", models)
    server = RemoteServer(tmp, "--catalog", str(path)).wait_ready()
    yield server
    server.stop()


def test_a_64_client_load_keeps_64_connections(small_queue_server):
    server = small_queue_server
    seen: set[int] = set()
    done = False

    def sample():
        process = psutil.Process(server.pid)
        while not done:
            for conn in process.net_connections("tcp"):
                if conn.laddr.port == server.port and conn.raddr:
                    seen.add(conn.raddr.port)
            time.sleep(0.05)

    async def load():
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=120)
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers(), limits=limits,
                                     timeout=60) as client:
            end = time.monotonic() + 12

            async def worker():
                while time.monotonic() < end:
                    r = await client.post("/v1/openai/embeddings", json={"model": MINILM, "input": "a sentence"})
                    assert r.status_code in (200, 429), r.text

            await asyncio.gather(*(worker() for _ in range(64)))

    import threading

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        asyncio.run(load())
    finally:
        done = True
        sampler.join()
    assert len(seen) <= 64 + 2, len(seen)  # (+2: the sampler may catch a /health probe's connection)


# (route, body, concurrent requests = 10x what the model admits at once)
OVERLOADS = {
    "embeddings": ("/v1/openai/embeddings", {"model": MINILM, "input": "a sentence " * 20}, 640),
    "rerank": ("/v1/rerank", {"model": RERANKER, "query": "a question", "documents": ["a sentence " * 20] * 4}, 160),
    "chat": ("/v1/openai/chat/completions",
             {"model": SMOLLM2, "messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 8}, 160),
}


@pytest.mark.parametrize("task", list(OVERLOADS))
def test_ten_times_the_queue_gets_200_or_429_and_health_stays_fast(small_queue_server, task):
    server = small_queue_server
    path, body, concurrency = OVERLOADS[task]
    statuses: dict[int, int] = {}
    admitted: list[float] = []

    async def load():
        # aiohttp: an httpx client with 640 requests in flight spends a core on its own connection pool,
        # and its delays (between sending headers and body, too) would be counted as the server's
        connector = aiohttp.TCPConnector(limit=700)
        async with aiohttp.ClientSession(base_url=server.base_url, headers=server.headers(), connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=120)) as client:
            async def one():
                started = time.perf_counter()
                async with client.post(path, json=body) as r:
                    text = await r.text()
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if r.status == 200:
                    admitted.append(time.perf_counter() - started)
                else:
                    assert r.status == 429 and int(r.headers["retry-after"]) >= 1, text

            for _ in range(2):  # two waves of 10x the queue, all at once
                await asyncio.gather(*(one() for _ in range(concurrency)))

    # the probe runs in a process of its own (the load's 640 coroutines would delay it in this one)
    prober = subprocess.Popen([sys.executable, PROBE, f"{server.base_url}/health"], stdout=subprocess.PIPE,
                              text=True)
    time.sleep(0.5)
    try:
        asyncio.run(load())
    finally:
        prober.send_signal(signal.SIGINT)
        health = [float(x) for x in prober.communicate(timeout=10)[0].split()]
    admitted.sort()
    health.sort()
    p99 = admitted[int(len(admitted) * 0.99) - 1]
    print(f"overload ({task}): {statuses}, admitted p50 {admitted[len(admitted) // 2] * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms; /health p50 {health[len(health) // 2] * 1000:.0f} ms, "
          f"p99 {health[int(len(health) * 0.99) - 1] * 1000:.0f} ms, max {health[-1] * 1000:.0f} ms "
          f"over {len(health)} probes")
    assert set(statuses) <= {200, 429} and statuses.get(429) and statuses.get(200)
    assert health[int(len(health) * 0.99) - 1] < 0.1
    # the worst probe: a full GC over the loaded models' heap stalled the loop 420-480 ms (gc.freeze), and a
    # burst of 640 request starts in one turn of the loop ~190 ms (api/pacing.py), both on the fastest machine
    # here. What is left is the event loop accepting 640 connections and parsing their requests (asyncio and
    # uvicorn's protocol, before any of inferd's code): the worst of 56 probes took 277 ms on the CI machine.
    assert health[-1] < 0.4
