"""Two `inferd serve` processes on one PostgreSQL: the limits and the tokens are the same on
both. 250 concurrent streams split over the two against the default limit of 200: exactly 50
refused; a process killed with slots held gives them back within the lease; a token revoked
on one is refused by the other within the token cache's time; tokens per minute spent on one
are counted by the other."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from inferd.accounts.db import Database
from inferd.accounts.models import RateHold
from tests.e2e.conftest import RemoteServer

LEASE_S = 6
# ignore_eos: a sampled stream of the random model can draw its end token early and give its slot back
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 900, "stream": True,
        "ignore_eos": True}


def tiny_catalog(root, tiny_lm_dir, limits: dict):
    catalog = root / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"models": [{
        "id": "tiny", "task": "text-generation", "backend": "transformers", "source": str(tiny_lm_dir),
        "limits": limits}]}))
    return catalog


@pytest.fixture(scope="module")
async def pair(tmp_path_factory, pg_server, tiny_lm_dir):
    url = await pg_server.new_database()
    root = tmp_path_factory.mktemp("pair")
    catalog = tiny_catalog(root, tiny_lm_dir, {"context_length": 1024, "max_batch_size": 8, "queue_size": 1000})
    env = {"INFERD_TOKEN_CACHE_TTL_S": "1", "INFERD_LIMIT_LEASE_S": str(LEASE_S), "INFERD_ENGINE_WORKERS": "1"}
    servers = []
    for name in ("a", "b"):
        data = root / name
        data.mkdir()
        servers.append(RemoteServer(data, "--catalog", str(catalog), "--database-url", url, env=env))
    try:
        for server in servers:
            server.wait_ready()
        yield servers, url
    finally:
        for server in servers:
            server.stop()


async def held(url: str, key: str) -> int:
    db = Database(url)
    try:
        async with db.sessions() as session:
            return int(await session.scalar(select(func.coalesce(func.sum(RateHold.n), 0))
                                            .where(RateHold.key == key)) or 0)
    finally:
        await db.close()


async def streams(clients, n: int, expect: int):
    """``n`` streams over the clients in turn; waits for ``expect`` refusals. (refused, tasks)."""
    refused = []

    async def one(client):
        async with client.stream("POST", "/v1/openai/chat/completions", json=CHAT) as r:
            if r.status_code == 429:
                refused.append(r.headers.get("retry-after"))
                return
            assert r.status_code == 200, await r.aread()
            async for _ in r.aiter_bytes():
                pass

    tasks = [asyncio.ensure_future(one(clients[i % len(clients)])) for i in range(n)]
    deadline = time.monotonic() + 60
    while len(refused) < expect and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # and nobody beyond them
    return refused, tasks


async def stop(tasks):
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def client(server, token) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120,
                             limits=httpx.Limits(max_connections=400, max_keepalive_connections=400))


async def test_limits_and_revocation_are_shared_and_a_dead_process_gives_its_slots_back(pair):
    (a, b), url = pair
    async with httpx.AsyncClient(base_url=a.base_url, headers=a.headers()) as admin:
        made = (await admin.post("/v1/accounts", json={"name": "shared"})).json()
    key = f"c:{made['account_id']}:tiny"
    async with client(a, made["token"]) as on_a, client(b, made["token"]) as on_b:
        refused, tasks = await streams([on_a, on_b], 250, 50)
        try:
            assert len(refused) == 50 and set(refused) == {"1"}
            assert await held(url, key) == 200
        finally:
            await stop([t for i, t in enumerate(tasks) if i % 2 == 0])  # a's clients leave: b keeps its slots
        for _ in range(50):
            if await held(url, key) <= 125:
                break
            await asyncio.sleep(0.1)
        on_b_held = await held(url, key)
        assert 0 < on_b_held <= 125
        os.kill(b.pid, signal.SIGKILL)  # b dies holding its slots
        killed_at = time.monotonic()
        refused, more = await streams([on_a], 200, on_b_held)
        await stop(more)
        assert time.monotonic() - killed_at < LEASE_S, "too slow to see the dead process's slots still held"
        assert len(refused) == on_b_held  # the dead process's slots still count, for now...
        await asyncio.sleep(LEASE_S + 1)
        refused, more = await streams([on_a], 200, 0)
        try:
            assert refused == []  # ...and come back within the lease
        finally:
            await stop(more + tasks)
    assert b.stop() != 0


async def test_a_revoked_token_and_tokens_per_minute_are_seen_by_the_other_process(tmp_path_factory, pg_server, tiny_lm_dir):
    # its own pair: the module's pair has lost b
    url = await pg_server.new_database()
    root = tmp_path_factory.mktemp("revoke")
    catalog = tiny_catalog(root, tiny_lm_dir, {"context_length": 512})
    env = {"INFERD_TOKEN_CACHE_TTL_S": "1"}
    servers = [RemoteServer(root / n, "--catalog", str(catalog), "--database-url", url, env=env)
               for n in ("a", "b") if (root / n).mkdir() is None]
    try:
        for server in servers:
            server.wait_ready()
        a, b = servers
        async with httpx.AsyncClient(base_url=a.base_url, headers=a.headers()) as admin:
            token = (await admin.post("/v1/api-tokens", json={"name": "leaving"})).json()
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
            async with client(b, token["token"]) as on_b:
                assert (await on_b.post("/v1/openai/chat/completions", json=body)).status_code == 200
                assert (await admin.delete(f"/v1/api-tokens/{token['token_id']}")).status_code == 200
                revoked_at = time.monotonic()
                while (await on_b.post("/v1/openai/chat/completions", json=body)).status_code == 200:
                    assert time.monotonic() - revoked_at < 1.5, "b still accepts the revoked token"
                    await asyncio.sleep(0.05)
            # tokens per minute: what the account consumed on a is counted by b within ~2 s
            made = (await admin.post("/v1/accounts", json={"name": "tpm", "tpm_rate_limit": 1000})).json()
            long = {**body, "messages": [{"role": "user", "content": "hello " * 300}], "max_tokens": 20}
            async with client(a, made["token"]) as on_a, client(b, made["token"]) as on_b:
                assert (await on_b.post("/v1/openai/chat/completions", json=body)).status_code == 200
                spent = 0
                while spent <= 1000:  # a takes the account past its minute
                    r = await on_a.post("/v1/openai/chat/completions", json=long)
                    assert r.status_code == 200, r.text
                    spent += r.json()["usage"]["total_tokens"]
                await asyncio.sleep(2.5)  # a writes its tokens each second; b reads them at most each second
                r = await on_b.post("/v1/openai/chat/completions", json=body)
                assert r.status_code == 429 and "1000 tokens per minute" in r.json()["error"]["message"]
                assert int(r.headers["retry-after"]) > 50
    finally:
        for server in servers:
            server.stop()
