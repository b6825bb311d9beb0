"""LoRA adapters on vLLM: an adapter built here with PEFT (random LoRA weights on SmolLM2) changes
the greedy answer, answers token for token as PEFT's merged model does, shares the base model's
batches, and is managed over /v1/lora/* with the rights of its account."""

from __future__ import annotations

import asyncio
import time

import pytest

from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import build_adapter, client_for, make_settings, start_app, until

CHAT = "/v1/openai/chat/completions"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LIMITS = {"context_length": 2048, "max_batch_size": 8}


@pytest.fixture(scope="module")
def adapters_root(tmp_path_factory, smollm2_dir):
    root = tmp_path_factory.mktemp("loras")
    adapter, merged = build_adapter(smollm2_dir, root / "a")
    wide, _ = build_adapter(smollm2_dir, root / "wide", rank=64)
    others = [build_adapter(smollm2_dir, root / f"other-{i}", seed=10 + i, merged=False)[0] for i in range(3)]
    return {"root": root, "adapter": adapter, "merged": merged, "wide": wide, "others": others}


def lora_catalog(smollm2_dir, adapters_root) -> Catalog:
    return Catalog([
        ModelSpec(id="smol", task="text-generation", backend="vllm", source=str(smollm2_dir), limits=LIMITS,
                  options={"dtype": "float32", "enforce_eager": True, "kv_cache_gib": 0.5, "enable_lora": True}),
        # PEFT's merged model, on the transformers runtime (which answers as vLLM does: test_runtime_parity.py)
        ModelSpec(id="merged", task="text-generation", backend="transformers", source=str(adapters_root["merged"]),
                  limits=LIMITS),
    ])


@pytest.fixture(scope="module")
def lora_settings(tmp_path_factory, adapters_root):
    return make_settings(tmp_path_factory.mktemp("lora"), deploy_paths=[adapters_root["root"]], deploy_sync_s=0.3)


@pytest.fixture(scope="module")
async def lora(lora_settings, smollm2_dir, adapters_root):
    async for h in start_app(lora_settings, lora_catalog(smollm2_dir, adapters_root)):
        for engine in h.state.pool.engines():
            assert engine.state.value == "ready", engine.error
        yield h


async def ready(client, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = (await client.get(f"/v1/lora/{name}/status")).json()
        if seen["status"] != "deploying":
            return seen
        await asyncio.sleep(0.1)
    raise TimeoutError(name)


async def greedy(client, model: str) -> tuple[str, list[str]]:
    r = await client.post(CHAT, json={"model": model, "messages": QUESTION, "temperature": 0, "max_tokens": 24,
                                      "logprobs": True})
    assert r.status_code == 200, (model, r.text)
    choice = r.json()["choices"][0]
    return choice["message"]["content"], [t["token"] for t in choice["logprobs"]["content"]]


async def test_an_adapter_answers_as_the_merged_model_does(lora, adapters_root):
    r = await lora.client.post("/v1/lora/create", json={"lora_name": "my-lora", "base_model": "smol",
                                                        "path": str(adapters_root["adapter"])})
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["status"] == "deploying" and made["rank"] == 8 and made["base_model"] == "smol"
    assert (await ready(lora.client, "my-lora"))["status"] == "deployed"
    base = await greedy(lora.client, "smol")
    adapted = await greedy(lora.client, "my-lora")
    assert adapted != base  # the adapter changes the answer
    assert adapted == await greedy(lora.client, "merged")  # token for token, PEFT's merged weights
    assert await greedy(lora.client, "smol:my-lora") == adapted
    r = await lora.client.post("/v1/inference/my-lora", json={"input": "Paris is", "max_new_tokens": 4,
                                                              "temperature": 0})
    assert r.status_code == 200, r.text
    listed = [a["lora_name"] for a in (await lora.client.get("/v1/model/smol/loras")).json()]
    assert listed == ["my-lora"]
    assert [a["lora_name"] for a in (await lora.client.get("/models/lora/list")).json()] == ["my-lora"]
    assert (await lora.client.get("/v1/model/merged/loras")).json() == []


async def test_adapter_and_base_requests_share_the_base_models_batches(lora, adapters_root):
    if "my-lora" not in lora.state.catalog:
        await lora.client.post("/v1/lora/create", json={"lora_name": "my-lora", "base_model": "smol",
                                                        "path": str(adapters_root["adapter"])})
        await ready(lora.client, "my-lora")
    engine = lora.state.pool.get("smol")
    long = {"messages": QUESTION, "max_tokens": 120, "ignore_eos": True, "temperature": 0}
    seen = 0

    async def watch():
        nonlocal seen
        while True:
            seen = max(seen, len(engine._live))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(lora.client.post(CHAT, json={"model": m, **long})
                                     for m in ("smol", "my-lora", "smol", "my-lora")))
    watcher.cancel()
    assert all(r.status_code == 200 for r in results)
    assert [r.json()["usage"]["completion_tokens"] for r in results] == [120] * 4
    # all four ran in the one vLLM engine at once: its scheduler steps every running request
    # together (up to max_num_seqs, with up to max_loras adapters in a step)
    assert seen == 4
    await lora.state.usage.flush()
    from sqlalchemy import select

    from inferd.accounts.models import UsageRecord
    async with lora.state.db.sessions() as session:
        models = [row.model for row in await session.scalars(select(UsageRecord).where(
            UsageRecord.request_id.in_([r.headers["x-request-id"] for r in results])))]
    assert sorted(models) == ["my-lora", "my-lora", "smol", "smol"]  # billed as themselves


async def test_base_requests_beside_every_adapter_slot_answer_as_alone(lora, adapters_root):
    """vLLM's CPU build read "no adapter" as the last adapter slot: with every slot full, the base
    model's tokens got that adapter's delta (engine/vllm_lora_ops.py)."""
    names = ["my-lora"] + [f"other-{i}" for i in range(3)]
    for name, path in zip(names, [adapters_root["adapter"], *adapters_root["others"]], strict=True):
        if name not in lora.state.catalog:
            await lora.client.post("/v1/lora/create", json={"lora_name": name, "base_model": "smol", "path": str(path)})
            assert (await ready(lora.client, name))["status"] == "deployed"
    alone = {name: await greedy(lora.client, name) for name in ["smol", *names]}
    together = await asyncio.gather(*(greedy(lora.client, name) for name in ["smol", *names] * 2))
    assert together == [alone[name] for name in ["smol", *names] * 2]
    for name in names[1:]:
        await lora.client.delete(f"/v1/lora/{name}")


async def test_bad_adapters_and_rights(lora, adapters_root, tmp_path):
    body = {"lora_name": "bad", "base_model": "smol", "path": str(adapters_root["wide"])}
    r = await lora.client.post("/v1/lora/create", json=body)
    assert r.status_code == 400 and "rank is 64" in r.text
    r = await lora.client.post("/v1/lora/create", json={**body, "base_model": "merged",
                                                        "path": str(adapters_root["adapter"])})
    assert r.status_code == 409 and "enable_lora" in r.text
    r = await lora.client.post("/v1/lora/create", json={**body, "base_model": "nope"})
    assert r.status_code == 404
    r = await lora.client.post("/v1/lora/create", json={**body, "path": str(tmp_path)})
    assert r.status_code == 403
    r = await lora.client.post("/v1/lora/create", json={**body, "lora_name": "merged",
                                                        "path": str(adapters_root["adapter"])})
    assert r.status_code == 409
    (adapters_root["root"] / "not-an-adapter").mkdir(exist_ok=True)
    r = await lora.client.post("/v1/lora/create", json={**body, "path": str(adapters_root["root"] / "not-an-adapter")})
    assert r.status_code == 400 and "adapter_config.json" in r.text
    mine = await lora.client.post("/v1/lora/create", json={"lora_name": "admins-lora", "base_model": "smol",
                                                           "path": str(adapters_root["adapter"])})
    assert mine.status_code == 200
    await ready(lora.client, "admins-lora")
    other = (await lora.client.post("/v1/accounts", json={"name": "other"})).json()
    async with client_for(lora, other["token"]) as them:
        assert (await them.get("/v1/lora/admins-lora")).status_code == 404
        assert (await them.delete("/v1/lora/admins-lora")).status_code == 404
        assert (await them.post(CHAT, json={"model": "admins-lora", "messages": QUESTION})).status_code == 404
        assert (await them.post(CHAT, json={"model": "smol:admins-lora", "messages": QUESTION})).status_code == 404
        assert "admins-lora" not in [a["lora_name"] for a in (await them.get("/models/lora/list")).json()]
        r = await them.post("/v1/lora/create", json={"lora_name": "theirs", "base_model": "smol", "private": False,
                                                     "path": str(adapters_root["adapter"])})
        assert r.status_code == 403
    r = await lora.client.patch("/v1/lora/admins-lora", json={"description": "made in a test"})
    assert r.json()["description"] == "made in a test"
    assert (await lora.client.delete("/v1/lora/admins-lora")).json()["status"] == "deleted"
    assert (await lora.client.post(CHAT, json={"model": "admins-lora", "messages": QUESTION})).status_code == 404
    assert (await lora.client.get("/v1/lora/admins-lora")).status_code == 404


async def test_adapters_come_back_at_start_and_two_processes_follow_each_other(lora, lora_settings, smollm2_dir,
                                                                                  adapters_root):
    if "my-lora" not in lora.state.catalog:
        await lora.client.post("/v1/lora/create", json={"lora_name": "my-lora", "base_model": "smol",
                                                        "path": str(adapters_root["adapter"])})
        await ready(lora.client, "my-lora")
    before = await greedy(lora.client, "my-lora")
    # a second server on the same database: what a restart finds, and what a second process
    # (another `inferd serve`, an ingress replica) follows while both run
    async for again in start_app(lora_settings, lora_catalog(smollm2_dir, adapters_root)):
        assert (await ready(again.client, "my-lora"))["status"] == "deployed"
        assert await greedy(again.client, "my-lora") == before
        assert await greedy(again.client, "smol:my-lora") == before

        body = {"lora_name": "later", "base_model": "smol", "path": str(adapters_root["others"][0])}
        assert (await again.client.post("/v1/lora/create", json=body)).status_code == 200
        assert (await ready(again.client, "later"))["status"] == "deployed"
        # the name is taken on every process at once (the database says so before a sync)
        assert (await lora.client.post("/v1/lora/create", json=body)).status_code == 409

        async def served_here():
            r = await lora.client.post(CHAT, json={"model": "later", "messages": QUESTION, "max_tokens": 2})
            return r.status_code == 200

        await until(served_here)
        assert await greedy(lora.client, "later") == await greedy(again.client, "later")
        base = lora.state.pool.get("smol")
        later_id = lora.state.adapters.adapters.owned("later", "admin", True).id
        assert later_id in await base._llm.list_loras()  # in this process's vLLM

        assert (await lora.client.patch("/v1/lora/later", json={"description": "changed there"})).status_code == 200

        async def changed_there():
            return (await again.client.get("/v1/lora/later")).json()["description"] == "changed there"

        await until(changed_there)

        assert (await again.client.delete("/v1/lora/later")).status_code == 200

        async def dropped_here():
            return (await lora.client.get("/v1/lora/later")).status_code == 404

        await until(dropped_here)
        assert later_id not in await base._llm.list_loras()  # unloaded here too
        r = await lora.client.post(CHAT, json={"model": "later", "messages": QUESTION})
        assert r.status_code == 404
        assert await greedy(lora.client, "my-lora") == before  # the others are untouched
