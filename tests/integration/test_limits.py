"""Rate limits in process (one server, local slots): concurrent requests per model per account
and per token, exactly, with 429 `Rate limited` and `Retry-After`; tokens per minute."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import client_for, make_settings, start_app


@pytest.fixture(scope="module")
async def app(tmp_path_factory, tiny_lm_dir):
    lm = ModelSpec(id="tiny", task="text-generation", backend="transformers", source=str(tiny_lm_dir),
                   limits={"context_length": 512, "max_batch_size": 8, "queue_size": 1000})
    async for h in start_app(make_settings(tmp_path_factory.mktemp("limits")), Catalog([lm])):
        yield h



# ignore_eos: a sampled stream of the random model can draw its end token early and give its slot back
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400, "stream": True,
        "ignore_eos": True}


async def hold_streams(client, n: int, expect: int, body=CHAT) -> tuple[list[httpx.Response], list[asyncio.Task]]:
    """``n`` streams at once; the refused come back at once, the admitted hold their slots.
    Waits for ``expect`` refusals (and half a second more, for any beyond them); returns the
    refused responses and the tasks."""
    refused: list[httpx.Response] = []

    async def one():
        async with client.stream("POST", "/v1/openai/chat/completions", json=body) as r:
            if r.status_code == 429:
                await r.aread()
                refused.append(r)
                return
            assert r.status_code == 200
            async for _ in r.aiter_bytes():
                pass

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    for _ in range(400):
        await asyncio.sleep(0.05)
        if len(refused) >= expect:
            break
    await asyncio.sleep(0.5)
    return refused, tasks


async def stop(tasks):
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_exactly_the_accounts_limit_runs_at_once(app):
    made = (await app.client.post("/v1/accounts", json={"name": "busy"})).json()  # the default: 200
    key = f"c:{made['account_id']}:tiny"
    async with client_for(app, made["token"]) as client:
        refused, tasks = await hold_streams(client, 250, 50)
        try:
            assert len(refused) == 50
            assert app.state.limits.slots.held(key) == 200
            for r in refused:
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["message"].startswith("Rate limited")
                assert r.json()["error"]["code"] == "rate_limited"
        finally:
            await stop(tasks)
    for _ in range(100):
        if app.state.limits.slots.held(key) == 0:
            break
        await asyncio.sleep(0.05)
    assert app.state.limits.slots.held(key) == 0  # clients that left gave their slots back


async def test_a_tokens_own_limit_narrows_its_accounts(app):
    made = (await app.client.post("/v1/accounts", json={"name": "narrow", "rate_limit": 6})).json()
    async with client_for(app, made["token"]) as owner:
        small = (await owner.post("/v1/api-tokens", json={"name": "small", "rate_limit": 2})).json()
        wide = (await owner.post("/v1/api-tokens", json={"name": "wide", "rate_limit": 50})).json()
        assert (await owner.get("/v1/me/rate_limit")).json()["rate_limit"] == 6
    async with client_for(app, small["token"]) as client, client_for(app, wide["token"]) as other:
        assert (await client.get("/v1/me/rate_limit")).json()["rate_limit"] == 2
        assert (await other.get("/v1/me/rate_limit")).json()["rate_limit"] == 6  # never wider than the account
        refused, tasks = await hold_streams(client, 3, 1)
        refused_wide, more = await hold_streams(other, 6, 2)  # the account has 4 left
        try:
            assert (len(refused), len(refused_wide)) == (1, 2)
        finally:
            await stop(tasks + more)


async def test_tokens_per_minute(app):
    made = (await app.client.post("/v1/accounts", json={"name": "wordy", "tpm_rate_limit": 30})).json()
    async with client_for(app, made["token"]) as client:
        body = {**CHAT, "stream": False, "max_tokens": 40, "temperature": 0}
        first = await client.post("/v1/openai/chat/completions", json=body)
        assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 30
        second = await client.post("/v1/openai/chat/completions", json=body)
        assert second.status_code == 429 and "tokens per minute" in second.json()["error"]["message"]
        assert 1 <= int(second.headers["retry-after"]) <= 60
        assert (await client.get("/v1/me/rate_limit")).json()["tpm_rate_limit"] == 30
