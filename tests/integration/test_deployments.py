"""Deployments while the server serves: POST /deploy/llm and /deploy/hf/ from local directories
(tiny random LMs, SmolLM2's conversion, MiniLM), addressed by deploy id, name and version; stop,
start, delete; failures with their reasons; memory refusals; privacy; a restart."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import time

import pytest

from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import build_tiny_lm, client_for, make_settings, start_app, until
from tests.hub import hub_stand_in
from tests.text import build_tiny_text_model

CHAT = "/v1/openai/chat/completions"
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def models_root(tmp_path_factory, smollm2_dir, minilm_path):
    """The directory deployments may load from: two tiny LMs (different weights), MiniLM, an empty
    directory, and a 'model' whose header claims 10 billion parameters."""
    root = tmp_path_factory.mktemp("deployable")
    build_tiny_lm(smollm2_dir, root / "tiny-a", seed=0)
    build_tiny_lm(smollm2_dir, root / "tiny-b", seed=1)
    shutil.copytree(minilm_path, root / "minilm")
    (root / "empty").mkdir()
    build_tiny_text_model("token-classification", minilm_path, root / "tiny-ner", seed=3)
    huge = root / "huge"
    huge.mkdir()
    header = json.dumps({"w": {"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, 0]}}).encode()
    (huge / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    (huge / "config.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
async def app(tmp_path_factory, models_root, minilm_path):
    catalog = Catalog([ModelSpec(id="minilm", task="embeddings", backend="sentence-transformers",
                                 source=str(minilm_path), aliases=("default",))])
    settings = make_settings(tmp_path_factory.mktemp("deploy"), deploy_paths=[models_root],
                             deploy_llm_backend="transformers", deploy_memory_gib=12)
    async for h in start_app(settings, catalog):
        yield h


async def deployed(client, deploy_id: str, timeout: float = 120) -> dict:
    """Wait until a deployment leaves initializing/deploying; its last state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get(f"/deploy/{deploy_id}")
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("initializing", "deploying"):
            return r.json()
        await asyncio.sleep(0.1)
    raise TimeoutError(f"deployment {deploy_id} did not come up")


async def chat(client, model: str, **extra):
    return await client.post(CHAT, json={"model": model, "messages": HELLO, "temperature": 0, "max_tokens": 8,
                                         **extra})


async def answer(client, model: str) -> tuple:
    """A greedy answer and its log-probabilities: two random models differ there even when both
    answer newlines."""
    r = await chat(client, model, logprobs=True)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    return choice["message"]["content"], tuple(round(t["logprob"], 4) for t in choice["logprobs"]["content"])


async def test_a_model_deploys_while_others_serve_and_answers_by_every_address(app, models_root):
    async with app.state.pool._load_lock:  # another model is loading: this one waits its turn
        r = await app.client.post("/deploy/llm", json={"model_name": "team/tiny", "path": str(models_root / "tiny-a")})
        assert r.status_code == 200, r.text
        made = r.json()
        assert made["status"] in ("initializing", "deploying") and made["version"] == made["deploy_id"]
        assert made["instances"] == {"running": 0, "pending": 1} and made["private"] is True
        deploy_id = made["deploy_id"]
        waiting = await chat(app.client, f"deploy_id:{deploy_id}")
        assert waiting.status_code == 503 and "retry-after" in waiting.headers, waiting.text
        seen = (await app.client.get(f"/deploy/{deploy_id}")).json()
        assert seen["progress"]["stage"] and seen["progress"]["memory_estimate_bytes"] > 0
        # the catalog's model serves meanwhile
        r = await app.client.post("/v1/openai/embeddings", json={"model": "minilm", "input": "still here"})
        assert r.status_code == 200
    up = await deployed(app.client, deploy_id)
    assert up["status"] == "deployed" and up["instances"] == {"running": 1, "pending": 0}, up
    answers = []
    for model in (f"deploy_id:{deploy_id}", "team/tiny", f"team/tiny:{deploy_id}"):
        r = await chat(app.client, model)
        assert r.status_code == 200, (model, r.text)
        answers.append(r.json()["choices"][0]["message"]["content"])
    assert len(set(answers)) == 1
    r = await app.client.post(f"/v1/inference/deploy/{deploy_id}", json={"input": "Hello", "max_new_tokens": 4,
                                                                          "temperature": 0})
    assert r.status_code == 200 and r.json()["results"][0]["generated_text"], r.text
    listed = [m["model_name"] for m in (await app.client.get("/models/list")).json()]
    assert "team/tiny" in listed and "minilm" in listed
    stats = (await app.client.get(f"/deploy/{deploy_id}/stats")).json()
    assert stats["requests"] == stats["succeeded"] == 4 and stats["output_tokens"] > 0
    await app.client.delete(f"/deploy/{deploy_id}")


async def test_a_new_version_takes_over_when_ready_and_the_old_one_still_answers(app, models_root):
    first = (await app.client.post("/deploy/llm", json={"model_name": "versioned",
                                                         "path": str(models_root / "tiny-a")})).json()
    assert (await deployed(app.client, first["deploy_id"]))["status"] == "deployed"
    old = await answer(app.client, "versioned")
    async with app.state.pool._load_lock:
        second = (await app.client.post("/deploy/llm", json={"model_name": "versioned",
                                                              "path": str(models_root / "tiny-b")})).json()
        # while the new version loads, the name still answers with the old one
        assert await answer(app.client, "versioned") == old
    assert (await deployed(app.client, second["deploy_id"]))["status"] == "deployed"
    new = await answer(app.client, "versioned")
    assert new != old  # different weights: the name is the new version now
    assert await answer(app.client, f"versioned:{first['deploy_id']}") == old
    assert await answer(app.client, f"deploy_id:{second['deploy_id']}") == new
    await app.client.delete(f"/deploy/{first['deploy_id']}")
    assert (await chat(app.client, f"versioned:{first['deploy_id']}")).status_code == 404
    assert (await chat(app.client, "versioned")).status_code == 200
    await app.client.delete(f"/deploy/{second['deploy_id']}")
    assert (await chat(app.client, "versioned")).status_code == 404


async def test_stop_start_and_delete(app, models_root):
    made = (await app.client.post("/deploy/hf/", json={"model_name": "my-embedder", "task": "embeddings",
                                                        "path": str(models_root / "minilm")})).json()
    deploy_id = made["deploy_id"]
    assert (await deployed(app.client, deploy_id))["status"] == "deployed"
    body = {"model": f"deploy_id:{deploy_id}", "input": ["a", "b"]}
    r = await app.client.post("/v1/openai/embeddings", json=body)
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    stopped = (await app.client.post(f"/deploy/{deploy_id}/stop")).json()
    assert stopped["status"] == "stopped" and stopped["instances"]["running"] == 0
    r = await app.client.post("/v1/openai/embeddings", json=body)
    assert r.status_code == 503 and "stopped" in r.text
    assert (await app.client.post(f"/deploy/{deploy_id}/start")).json()["status"] in ("initializing", "deploying")
    assert (await deployed(app.client, deploy_id))["status"] == "deployed"
    assert (await app.client.post("/v1/openai/embeddings", json=body)).status_code == 200
    r = await app.client.put(f"/deploy/{deploy_id}", json={"settings": {"min_instances": 0, "max_instances": 3}})
    assert r.json()["settings"] == {"min_instances": 0, "max_instances": 3}
    assert (await app.client.delete(f"/deploy/{deploy_id}")).json()["status"] == "deleted"
    assert (await app.client.get(f"/deploy/{deploy_id}")).status_code == 404
    assert (await app.client.post("/v1/openai/embeddings", json=body)).status_code == 404
    assert deploy_id not in [d["deploy_id"] for d in (await app.client.get("/deploy/list")).json()]


async def test_a_text_task_model_deploys_and_answers_by_id(app, models_root):
    r = await app.client.post("/deploy/hf/", json={"model_name": "my-ner", "task": "token-classification",
                                                   "path": str(models_root / "tiny-ner")})
    assert r.status_code == 200, r.text
    deploy_id = r.json()["deploy_id"]
    assert (await deployed(app.client, deploy_id))["status"] == "deployed"
    r = await app.client.post(f"/v1/inference/deploy/{deploy_id}", json={"input": "Tim Cook in Paris",
                                                                        "aggregation_strategy": "none"})
    assert r.status_code == 200 and r.json()["results"] and r.json()["inference_status"]["status"] == "succeeded"
    r = await app.client.post("/deploy/hf/", json={"model_name": "my-ner-2", "task": "token-classification",
                                                   "path": str(models_root / "tiny-ner"), "backend": "spacy"})
    assert r.status_code == 400 and "transformers-text" in r.text  # only the task's listed runtimes
    assert (await app.client.delete(f"/deploy/{deploy_id}")).json()["status"] == "deleted"


async def test_failures_say_why(app, models_root, tmp_path):
    empty = (await app.client.post("/deploy/llm", json={"model_name": "broken", "path": str(models_root / "empty")}))
    assert empty.status_code == 200, empty.text
    failed = await deployed(app.client, empty.json()["deploy_id"])
    assert failed["status"] == "failed" and failed["fail_reason"], failed
    r = await chat(app.client, "broken")
    assert r.status_code == 503 and failed["fail_reason"][:40] in r.text
    hub = (await app.client.post("/deploy/llm", json={"model_name": "from-hub",
                                                      "hf": {"repo": "inferd-test/does-not-exist-anywhere"}})).json()
    failed = await deployed(app.client, hub["deploy_id"])
    assert failed["status"] == "failed" and "does-not-exist-anywhere" in failed["fail_reason"]
    # too large for the memory left: refused before anything is stored
    r = await app.client.post("/deploy/llm", json={"model_name": "huge", "path": str(models_root / "huge")})
    assert r.status_code == 409 and "does not fit" in r.json()["error"] and "10000M parameters" in r.json()["error"]
    assert "huge" not in [d["model_name"] for d in (await app.client.get("/deploy/list")).json()]
    # paths outside the allowed directories look the same whether they exist or not
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for path in (str(outside), "/etc", "/nope/nothing", str(models_root / ".." / "x"), "../../etc"):
        r = await app.client.post("/deploy/llm", json={"model_name": "sneaky", "path": path})
        assert r.status_code == 403 and "deploy_paths" in r.text, (path, r.text)
    for bad in [{"model_name": "a:b", "path": "x"}, {"model_name": "", "path": "x"},
                {"model_name": "ok", "path": "x", "extra_args": {"trust_remote_code": True}},
                {"model_name": "ok", "path": "x", "unknown": 1}, {"model_name": "ok", "hf": {"repo": "../../x"}},
                {"model_name": "x" * 300, "path": "x"}]:
        assert (await app.client.post("/deploy/llm", json=bad)).status_code == 422, bad
    for bad, status in [({"model_name": "ok"}, 400), ({"model_name": "ok", "path": "x", "hf": {"repo": "a/b"}}, 400),
                        ({"model_name": "deploy/x", "path": "x"}, 400), ({"model_name": "minilm", "path": "x"}, 409),
                        ({"model_name": "default", "path": "x"}, 409)]:
        r = await app.client.post("/deploy/llm", json=bad)
        assert r.status_code == status, (bad, r.text)
    r = await app.client.post("/deploy/hf/", json={"model_name": "x", "task": "embeddings", "backend": "vllm",
                                                   "path": str(models_root / "minilm")})
    assert r.status_code == 400 and "backend" in r.text
    for d in (await app.client.get("/deploy/list")).json():
        await app.client.delete(f"/deploy/{d['deploy_id']}")


@pytest.fixture
def hub(monkeypatch, tmp_path, models_root):
    """A hub stand-in serving tiny-a as ``inferd-test/tiny``, slowly enough (a 64 KiB chunk each
    20 ms) to watch the download; huggingface_hub pointed at it, with an empty cache."""
    import huggingface_hub.constants as constants

    with hub_stand_in({"inferd-test/tiny": models_root / "tiny-a"}, chunk_delay_s=0.02) as url:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 << 10)  # (10 MiB: tiny-a in one update)
        yield url


async def test_a_hub_deployment_shows_its_download_as_it_runs(app, hub, models_root):
    files = [p for p in (models_root / "tiny-a").rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    assert max(p.stat().st_size for p in files) > 20 * (64 << 10)  # a download of many chunks
    r = await app.client.post("/deploy/llm", json={"model_name": "team/from-hub", "hf": {"repo": "inferd-test/tiny"}})
    assert r.status_code == 200, r.text
    deploy_id = r.json()["deploy_id"]
    seen = []
    deadline = time.monotonic() + 120
    while (now := (await app.client.get(f"/deploy/{deploy_id}")).json())["status"] in ("initializing", "deploying"):
        assert time.monotonic() < deadline
        seen.append(now["progress"] or {})
        await asyncio.sleep(0.05)
    assert now["status"] == "deployed", now
    during = [p for p in seen if p.get("stage") == "fetching weights" and "bytes_downloaded" in p]
    assert any(0 < p["bytes_downloaded"] < size for p in during), during  # seen part way
    # (the total grows as the files start, up to 8 at once; bytes only ever grow)
    for key in ("bytes_downloaded", "bytes_to_download"):
        assert [p[key] for p in during] == sorted(p[key] for p in during)
    assert all(p["bytes_downloaded"] <= p["bytes_to_download"] <= size for p in during)
    after = [p for p in seen if p.get("stage") == "loading weights and starting the runtime"]
    assert all(p["bytes_downloaded"] == p["bytes_to_download"] == size for p in after)
    assert (await chat(app.client, "team/from-hub")).status_code == 200
    assert (await app.client.delete(f"/deploy/{deploy_id}")).status_code == 200


async def test_another_account_neither_sees_nor_calls_a_private_deployment(app, models_root):
    made = (await app.client.post("/deploy/hf/", json={"model_name": "mine", "task": "embeddings",
                                                        "path": str(models_root / "minilm")})).json()
    assert (await deployed(app.client, made["deploy_id"]))["status"] == "deployed"
    other = (await app.client.post("/v1/accounts", json={"name": "other"})).json()
    async with client_for(app, other["token"]) as them:
        assert (await them.get(f"/deploy/{made['deploy_id']}")).status_code == 404
        assert (await them.get("/deploy/list")).json() == []
        for model in ("mine", f"deploy_id:{made['deploy_id']}", f"mine:{made['deploy_id']}"):
            r = await them.post("/v1/openai/embeddings", json={"model": model, "input": "x"})
            assert r.status_code == 404, (model, r.text)
        assert "mine" not in [m["id"] for m in (await them.get("/v1/openai/models")).json()["data"]]
        assert "mine" not in [m["model_name"] for m in (await them.get("/models/list")).json()]
        assert (await them.post(f"/deploy/{made['deploy_id']}/stop")).status_code == 404
        assert (await them.delete(f"/deploy/{made['deploy_id']}")).status_code == 404
        r = await them.post("/deploy/hf/", json={"model_name": "mine", "task": "embeddings",
                                                 "path": str(models_root / "minilm")})
        assert r.status_code == 409
        r = await them.post("/deploy/hf/", json={"model_name": "public", "task": "embeddings", "private": False,
                                                 "path": str(models_root / "minilm")})
        assert r.status_code == 403
    assert "mine" not in (await app.client.get("/health")).json()["models"]
    assert (await app.client.get("/deploy/list", params={"all": True})).json()[0]["owner"] == "acc_admin"
    await app.client.delete(f"/deploy/{made['deploy_id']}")


async def test_deployments_come_back_after_a_restart(tmp_path, models_root, minilm_path):
    catalog = Catalog([ModelSpec(id="minilm", task="embeddings", backend="sentence-transformers",
                                 source=str(minilm_path))])
    settings = make_settings(tmp_path, deploy_paths=[models_root], deploy_llm_backend="transformers")
    async for h in start_app(settings, catalog):
        up = (await h.client.post("/deploy/llm", json={"model_name": "lasting", "path": str(models_root / "tiny-a")}))
        kept = (await h.client.post("/deploy/hf/", json={"model_name": "parked", "task": "embeddings",
                                                          "path": str(models_root / "minilm")})).json()
        assert (await deployed(h.client, up.json()["deploy_id"]))["status"] == "deployed"
        answer = (await chat(h.client, "lasting")).json()["choices"][0]["message"]["content"]
        await deployed(h.client, kept["deploy_id"])
        await h.client.post(f"/deploy/{kept['deploy_id']}/stop")
    async for h in start_app(settings, catalog):
        assert (await deployed(h.client, up.json()["deploy_id"]))["status"] == "deployed"
        assert (await chat(h.client, "lasting")).json()["choices"][0]["message"]["content"] == answer
        assert (await h.client.get(f"/deploy/{kept['deploy_id']}")).json()["status"] == "stopped"
        r = await h.client.post("/v1/openai/embeddings", json={"model": "parked", "input": "x"})
        assert r.status_code == 503


async def test_two_processes_on_one_database_follow_each_others_deployments(tmp_path, models_root, minilm_path):
    """Two servers on one database (as several `inferd serve` processes or ingress replicas are):
    what one deploys, stops, starts and deletes, the other serves, stops, starts and drops, within
    a few of its sync rounds; each answers with its own engine on the same weights."""
    catalog = Catalog([ModelSpec(id="minilm", task="embeddings", backend="sentence-transformers",
                                 source=str(minilm_path))])
    settings = make_settings(tmp_path, deploy_paths=[models_root], deploy_llm_backend="transformers",
                             deploy_sync_s=0.2)

    async for one in start_app(settings, catalog):
        async for other in start_app(settings, catalog):
            made = (await one.client.post("/deploy/llm", json={"model_name": "shared/tiny",
                                                               "path": str(models_root / "tiny-a")})).json()
            deploy_id = made["deploy_id"]
            assert (await deployed(one.client, deploy_id))["status"] == "deployed"

            async def served_there():
                return (await chat(other.client, "shared/tiny")).status_code == 200

            await until(served_there)
            r = await chat(other.client, f"deploy_id:{deploy_id}")
            assert r.status_code == 200, r.text
            # an engine of its own, on the same weights (not the same answer: this random model's
            # next-token distribution is nearly flat, and its greedy pick turns on rounding)
            here, there = (h.state.pool.find(f"shared/tiny:{deploy_id}") for h in (one, other))
            assert here is not None and there is not None and here is not there
            assert there.ref.version.source == here.ref.version.source == f"path:{models_root / 'tiny-a'}"

            assert (await one.client.post(f"/deploy/{deploy_id}/stop")).status_code == 200

            async def stopped_there():
                return (await chat(other.client, "shared/tiny")).status_code == 503

            await until(stopped_there)
            assert (await other.client.get(f"/deploy/{deploy_id}")).json()["status"] == "stopped"

            assert (await one.client.post(f"/deploy/{deploy_id}/start")).status_code == 200
            await until(served_there)

            assert (await one.client.delete(f"/deploy/{deploy_id}")).status_code == 200

            async def dropped_there():
                return (await other.client.get(f"/deploy/{deploy_id}")).status_code == 404

            await until(dropped_there)
            assert (await chat(other.client, "shared/tiny")).status_code == 404
