"""`inferd serve --ray`: the same API, tokens and limits in front of models in Ray Serve
replicas (a local Ray the server starts on 127.0.0.1). MiniLM on 2 replicas, the reranker on
1, and an autoscaled copy of MiniLM (1 to 2 replicas), a tiny LM, and one model of each other
kind (spaCy NER, a tiny fill-mask model, EfficientNet, whisper, Piper, a tiny diffusion
model) — each replica a process of its own.
Real clients (openai, cohere, LiteLLM, httpx) against the server; replicas seen as processes
(Ray names them ``ray::ServeReplica:...``) and in inferd's /metrics."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import base64
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.audio import SENTENCES, speak, word_error_rate
from tests.conftest import TEST_CACHE, build_adapter, build_tiny_lm
from tests.e2e.conftest import RemoteServer, default_models, write_catalog
from tests.text import build_tiny_text_model
from tests.vision import encoded, photo

pytest.importorskip("ray.serve")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RERANKER = "inferd/minilm-bi-encoder-reranker"
SCALED = "inferd/minilm-autoscaled"
TINY = "tiny"  # a random-weight LM on the transformers runtime
SPLIT = "tiny-tp2"  # a random-weight LM with Qwen2.5's tokenizer on vLLM in two tensor-parallel shards
FILL = "test/fill-mask"
WHISPER = "openai/whisper-tiny.en"
TEXTS = ["Paris is the capital of France.", "The capital city of France is Paris.", "Bananas are yellow."]


def serve_replicas(title: str) -> list[psutil.Process]:
    """The live Serve replica processes whose title (Ray's ``ray::ServeReplica:APP:DEPLOYMENT``)
    holds ``title``."""
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or ())
        if line.startswith("ray::ServeReplica:") and title in line:
            out.append(proc)
    return out


def replicas(model: str) -> list[psutil.Process]:
    """The live replica processes of a model (Ray titles them with the deployment's name)."""
    return serve_replicas(":model-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", model) + "_")


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def replica_calls(server: RemoteServer, model: str) -> dict[str, float]:
    """inferd_replica_calls_total by replica for a model, from the ingress's /metrics."""
    text = httpx.get(f"{server.base_url}/metrics", headers=server.headers(), timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("inferd_replica_calls_total{") and f'model="{model}"' in line:
            out[re.search(r'replica="([^"]+)"', line).group(1)] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.fixture(scope="module")
def fill_mask_dir(minilm_path) -> Path:
    return build_tiny_text_model("fill-mask", minilm_path, TEST_CACHE / "text" / "tiny-fill-mask", seed=3)


@pytest.fixture(scope="module")
def split_lm_dir(tmp_path_factory, qwen_coder_dir) -> Path:
    """A tiny random-weight LM (4 heads: two shards of 2) with Qwen2.5's tokenizer, which pickles to
    10 MB: more than Ray Serve's default gRPC message (the replica's description carries it)."""
    # (head_dim 64: vLLM's CPU attention has no kernel for the 16 of build_tiny_lm's default)
    return build_tiny_lm(qwen_coder_dir, tmp_path_factory.mktemp("tiny-qwen"), hidden=256, heads=4)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, smollm2_dir) -> tuple[Path, Path]:
    """A PEFT adapter on SmolLM2 (random LoRA weights) and PEFT's merged model of it."""
    return build_adapter(smollm2_dir, tmp_path_factory.mktemp("ray-adapters") / "tone")


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory, tiny_lm_dir, fill_mask_dir, smollm2_dir, split_lm_dir, adapter):
    root = tmp_path_factory.mktemp("ray")
    minilm, reranker = default_models("embeddings")[0], default_models("reranker")[0]
    scaled = {**minilm, "id": SCALED, "aliases": [],
              "scaling": {"min_instances": 1, "max_instances": 2, "target_ongoing_requests": 1,
                          "upscale_delay_s": 0.5, "downscale_delay_s": 2}}
    tiny = {"id": TINY, "task": "text-generation", "backend": "transformers", "source": str(tiny_lm_dir),
            "limits": {"context_length": 1024, "max_batch_size": 8}}
    # one model of each other kind: the text and vision tasks answer in their replicas (labels,
    # tokenizer), speech and images stream or batch there
    others = [*default_models("token-classification", "image-classification", "text-to-speech", "text-to-image"),
              *[m for m in default_models("automatic-speech-recognition") if m["id"] == WHISPER],
              {"id": FILL, "task": "fill-mask", "backend": "transformers-text", "source": str(fill_mask_dir)}]
    split = {"id": SPLIT, "task": "text-generation", "backend": "vllm", "source": str(split_lm_dir),
             "limits": {"context_length": 1024, "max_batch_size": 8},
             "options": {"tensor_parallel_size": 2, "dtype": "float32", "kv_cache_gib": 0.25}}
    models = [{**minilm, "scaling": {"min_instances": 2, "max_instances": 2}}, reranker, scaled, tiny, split, *others]
    catalog = write_catalog(root / "catalog.yaml", models)
    server = RemoteServer(root, "--ray", "--catalog", str(catalog),
                          env={"INFERD_RAY_DASHBOARD": "false", "INFERD_TOKEN_CACHE_TTL_S": "0.2",
                               # a replica that cannot load is tried once, not 3 times, before Serve gives up
                               "RAY_SERVE_MAX_PER_REPLICA_RETRY_COUNT": "1",
                               "INFERD_DEPLOY_PATHS": json.dumps([str(fill_mask_dir.parent), str(root),
                                                                  str(smollm2_dir), str(adapter[0])])})
    try:
        yield server.wait_ready(timeout=600)
    finally:
        assert server.stop(timeout=60) == 0
        wait_for(lambda: not replicas(MINILM), 30, "the replicas end with the server")


def test_openai_sdk_embeddings_are_the_models_own(ray_server):
    import openai
    from sentence_transformers import SentenceTransformer

    from inferd.catalog.sources import resolve_source

    client = openai.OpenAI(base_url=f"{ray_server.base_url}/v1/openai", api_key=ray_server.token)
    got = np.array([d.embedding for d in client.embeddings.create(model=MINILM, input=TEXTS).data])
    model = SentenceTransformer(str(resolve_source(default_models("embeddings")[0]["source"])), device="cpu")
    want = model.encode(TEXTS, normalize_embeddings=True)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[0] @ got[1] > got[0] @ got[2] + 0.3


def test_cohere_rerank_and_litellm_through_ray(ray_server):
    import cohere
    import litellm

    co = cohere.ClientV2(api_key=ray_server.token, base_url=ray_server.base_url)
    ranked = co.rerank(model=RERANKER, query="What is the capital of France?", documents=TEXTS[::-1],
                       max_tokens_per_doc=64)
    assert ranked.results[0].index in (1, 2) and ranked.results[-1].index == 0
    result = litellm.embedding(model=f"infinity/{MINILM}", input=["hello"], api_key=ray_server.token,
                               api_base=ray_server.base_url)
    assert len(result.data[0]["embedding"]) == 384
    reranked = litellm.rerank(model=f"deepinfra/{RERANKER}", query="capital of France", documents=TEXTS[::-1],
                              api_base=f"{ray_server.base_url}/v1/openai", api_key=ray_server.token)
    assert max(reranked.results, key=lambda r: r["relevance_score"])["index"] in (1, 2)


def test_every_other_kind_of_model_answers_from_its_replica(ray_server, fill_mask_dir):
    import openai
    from PIL import Image
    from transformers import pipeline

    from inferd.backends import backend_class
    from inferd.backends.vision import ImageInput
    from inferd.catalog import Catalog, ModelSpec

    kinds = {m["id"]: m for m in default_models("token-classification", "image-classification", "text-to-speech",
                                                "text-to-image", "automatic-speech-recognition")}
    for model in (*[k for k in kinds if k != "openai/whisper-base"], FILL):
        assert replicas(model), f"{model} has no replica process"
    client = openai.OpenAI(base_url=f"{ray_server.base_url}/v1/openai", api_key=ray_server.token, max_retries=0)
    native = f"{ray_server.base_url}/v1/inference"

    # text tasks: the answer is made in the replica (spaCy's labels and offsets; the tokenizer's fills)
    sentence = "Apple's chief Tim Cook flew to Paris on Monday."
    r = httpx.post(f"{native}/spacy/en_core_web_sm", json={"input": sentence}, headers=ray_server.headers(), timeout=60)
    assert r.status_code == 200, r.text
    found = {(e["word"], e["entity_group"]) for e in r.json()["results"]}
    assert {("Apple", "ORG"), ("Tim Cook", "PERSON"), ("Paris", "GPE")} <= found
    assert all(sentence[e["start"]:e["end"]] == e["word"] for e in r.json()["results"])
    r = httpx.post(f"{native}/{FILL}", json={"input": "Where is my [MASK]?"}, headers=ray_server.headers(), timeout=60)
    assert r.status_code == 200, r.text
    want = pipeline("fill-mask", model=str(fill_mask_dir), device="cpu")("Where is my [MASK]?")
    assert [x["token"] for x in r.json()["results"]] == [x["token"] for x in want]
    np.testing.assert_allclose([x["score"] for x in r.json()["results"]], [x["score"] for x in want], atol=1e-5)
    # the check that needs the model's mask token runs in the replica too: a 400 in the native shape
    r = httpx.post(f"{native}/{FILL}", json={"input": "no mask here"}, headers=ray_server.headers(), timeout=60)
    assert r.status_code == 400 and "[MASK]" in r.text

    # vision: EfficientNet's best label for a photo, as the backend in this process gives it
    r = httpx.post(f"{native}/google/efficientnet-lite0", headers=ray_server.headers(), timeout=60,
                   files={"image": ("china.jpg", encoded(photo("china.jpg"), "JPEG"))})
    assert r.status_code == 200, r.text
    ref = next(Catalog([ModelSpec.model_validate(kinds["google/efficientnet-lite0"])]).refs())
    local = backend_class(ref.spec.backend)(ref.spec, ref.version.source, dict(ref.spec.options), threads=1)
    local.load()
    row = local.forward([local.tokenize([ImageInput(photo("china.jpg"))])[0].ids])[0]
    assert r.json()["results"][0]["label"] == local.labels[int(np.argmax(row))]

    # speech to text: the upload travels to the replica; the seconds it decoded come back (usage)
    text = SENTENCES[0]
    verbose = client.audio.transcriptions.create(model=WHISPER, file=("fox.wav", speak(text)),
                                                 response_format="verbose_json")
    assert word_error_rate(text, verbose.text) <= 0.15 and verbose.duration > 2
    streamed = list(client.audio.transcriptions.create(model=WHISPER, file=("fox.wav", speak(text)), stream=True))
    assert word_error_rate(text, streamed[-1].text) <= 0.15

    # text to speech, streamed sentence by sentence from the replica; images made there
    voice = default_models("text-to-speech")[0]["id"]
    wav = client.audio.speech.create(model=voice, voice="alloy", input="Hello from a replica. And a second sentence.",
                                     response_format="wav").content
    assert wav[:4] == b"RIFF" and len(wav) > 40_000  # two sentences of 22 kHz 16-bit audio
    image = client.images.generate(model=default_models("text-to-image")[0]["id"], prompt="a red door",
                                   size="256x256", n=2)
    pictures = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in image.data]
    assert [p.size for p in pictures] == [(256, 256), (256, 256)]


def test_a_users_deployment_gets_replicas_of_its_own_and_they_go_with_it(ray_server, fill_mask_dir):
    """POST /deploy/hf/ on --ray: a Serve application of its own, min_instances replicas, called by
    deploy id; deleted, its replicas end."""
    headers = ray_server.headers()
    r = httpx.post(f"{ray_server.base_url}/deploy/hf/", headers=headers, timeout=30, json={
        "model_name": "my-fill", "task": "fill-mask", "path": str(fill_mask_dir),
        "settings": {"min_instances": 2, "max_instances": 2}})
    assert r.status_code == 200, r.text
    deploy_id = r.json()["deploy_id"]
    status = _deployed(ray_server, deploy_id)
    assert status["status"] == "deployed", status
    assert len(replicas("my-fill")) == 2  # replica bounds from the deployment's settings
    r = httpx.post(f"{ray_server.base_url}/v1/inference/deploy/{deploy_id}", json={"input": "Where is my [MASK]?"},
                   headers=headers, timeout=60)
    assert r.status_code == 200 and len(r.json()["results"]) == 5, r.text
    r = httpx.post(f"{ray_server.base_url}/v1/inference/{FILL}", json={"input": "Where is my [MASK]?"},
                   headers=headers, timeout=60)
    assert r.status_code == 200  # the catalog's copy of the same weights goes on serving
    assert httpx.delete(f"{ray_server.base_url}/deploy/{deploy_id}", headers=headers,
                        timeout=60).json()["status"] == "deleted"
    wait_for(lambda: not replicas("my-fill"), 60, "the deployment's replicas end with it")

    # weights that do not load in the replica: Serve gives up on it, and the deployment says why
    broken = ray_server.data_dir / "broken-fill"
    shutil.copytree(fill_mask_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 4096)
    r = httpx.post(f"{ray_server.base_url}/deploy/hf/", headers=headers, timeout=30, json={
        "model_name": "my-broken-fill", "task": "fill-mask", "path": str(broken)})
    assert r.status_code == 200, r.text
    failed = _deployed(ray_server, r.json()["deploy_id"])
    assert failed["status"] == "failed" and "failed to deploy on Ray Serve" in failed["fail_reason"], failed
    assert "failed to load" in failed["fail_reason"], failed  # the replica's own reason
    assert not replicas("my-broken-fill")
    r = httpx.post(f"{ray_server.base_url}/v1/inference/my-broken-fill", json={"input": "Where is my [MASK]?"},
                   headers=headers, timeout=60)
    assert r.status_code == 503 and "Ray Serve" in r.text


def test_an_adapter_on_a_base_in_replicas_answers_as_the_merged_model(ray_server, smollm2_dir, adapter):
    """A LoRA adapter on a vLLM deployment served by Ray Serve replicas: loaded into a replica when
    made, then named by each request (a replica loads it on its first such request); it answers
    token for token as PEFT's merged model does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    headers, base_url = ray_server.headers(), ray_server.base_url
    r = httpx.post(f"{base_url}/deploy/llm", headers=headers, timeout=30, json={
        "model_name": "ray/smol", "path": str(smollm2_dir), "max_batch_size": 8,
        "extra_args": {"backend": "vllm", "enable_lora": True, "dtype": "float32", "kv_cache_gib": 0.5,
                       "context_length": 2048}})
    assert r.status_code == 200, r.text
    deploy_id = r.json()["deploy_id"]
    try:
        assert _deployed(ray_server, deploy_id)["status"] == "deployed"
        assert len(replicas("ray/smol")) == 1
        r = httpx.post(f"{base_url}/v1/lora/create", headers=headers, timeout=60, json={
            "lora_name": "ray-tone", "base_model": "ray/smol", "path": str(adapter[0])})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 120
        while (seen := httpx.get(f"{base_url}/v1/lora/ray-tone/status", headers=headers).json())["status"] == "deploying":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert seen["status"] == "deployed", seen

        def greedy(model: str) -> str:
            r = httpx.post(f"{base_url}/v1/openai/chat/completions", headers=headers, timeout=120, json={
                "model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "temperature": 0, "max_tokens": 24})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

        tokenizer = AutoTokenizer.from_pretrained(adapter[1])
        merged = AutoModelForCausalLM.from_pretrained(adapter[1], dtype=torch.float32)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = merged.generate(**prompt, max_new_tokens=24, do_sample=False)
        expected = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
        assert greedy("ray-tone") == greedy("ray/smol:ray-tone") == expected
        assert greedy("ray/smol") != expected  # the base answers as itself
        assert httpx.delete(f"{base_url}/v1/lora/ray-tone", headers=headers, timeout=60).json()["status"] == "deleted"
    finally:
        httpx.delete(f"{base_url}/deploy/{deploy_id}", headers=headers, timeout=60)
    wait_for(lambda: not replicas("ray/smol"), 60, "the deployment's replicas end with it")


def _deployed(server: RemoteServer, deploy_id: str) -> dict:
    deadline = time.monotonic() + 300
    while (status := httpx.get(f"{server.base_url}/deploy/{deploy_id}", headers=server.headers(),
                               timeout=30).json())["status"] in ("initializing", "deploying"):
        assert time.monotonic() < deadline, status
        time.sleep(1)
    return status


def test_bad_input_is_a_4xx_in_the_dialects_shape(ray_server):
    url = f"{ray_server.base_url}/v1/openai/embeddings"
    empty = httpx.post(url, json={"model": MINILM, "input": [""]}, headers=ray_server.headers())
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"
    wide = httpx.post(url, json={"model": MINILM, "input": "x", "dimensions": 999}, headers=ray_server.headers())
    assert wide.status_code == 400 and "384" in wide.json()["error"]["message"]
    many = httpx.post(url, json={"model": MINILM, "input": ["x"] * 5000}, headers=ray_server.headers())
    assert many.status_code == 413
    anonymous = httpx.post(url, json={"model": MINILM, "input": "x"})
    assert anonymous.status_code == 401


async def _burst(server: RemoteServer, model: str, n: int, token: str | None = None, inputs: int = 1) -> list[int]:
    headers = {"Authorization": f"Bearer {token or server.token}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=120,
                                 limits=httpx.Limits(max_connections=n)) as client:
        async def one(i: int) -> int:
            body = {"model": model, "input": [f"sentence {i} {j} " * 20 for j in range(inputs)]}
            return (await client.post("/v1/openai/embeddings", json=body)).status_code
        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_two_replicas_share_the_load(ray_server):
    assert len(replicas(MINILM)) == 2
    before = replica_calls(ray_server, MINILM)
    # a burst's requests reach the ingress together and go as one call or a few, and Ray's router
    # picks between two idle replicas at random: a few bursts can all land on one (1 in 8 for 4
    # one-call bursts), so the bursts go on until both have served, up to 20
    for _ in range(20):
        assert set(asyncio.run(_burst(ray_server, MINILM, 48))) == {200}
        after = replica_calls(ray_server, MINILM)
        served = {replica: after[replica] - before.get(replica, 0) for replica in after}
        if len([r for r, n in served.items() if n > 0]) == 2:
            break
    assert len([r for r, n in served.items() if n > 0]) == 2, served


def test_an_accounts_limit_holds_across_replicas(ray_server):
    made = httpx.post(f"{ray_server.base_url}/v1/accounts", json={"name": "ten", "rate_limit": 10},
                      headers=ray_server.headers()).json()
    # 30 requests of 128 long inputs at once: the ten admitted take seconds, so they still hold
    # their slots when the rest arrive, whichever replica runs them
    statuses = asyncio.run(_burst(ray_server, MINILM, 30, token=made["token"], inputs=128))
    assert statuses.count(200) == 10 and statuses.count(429) == 20, statuses


def test_a_killed_replica_fails_no_request_silently_and_comes_back(ray_server):
    victims = replicas(MINILM)
    assert len(victims) == 2
    statuses: list[int] = []

    async def load(seconds: float) -> None:
        end = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=ray_server.base_url, headers=ray_server.headers(),
                                     timeout=30) as client:  # a hang fails the test
            async def one(i: int) -> None:
                while time.monotonic() < end:
                    r = await client.post("/v1/openai/embeddings", json={"model": MINILM, "input": [f"text {i}"]})
                    statuses.append(r.status_code)
                    if r.status_code == 503:
                        assert r.headers.get("retry-after")
            await asyncio.gather(*(one(i) for i in range(8)))

    async def kill_during_load() -> None:
        task = asyncio.create_task(load(12))
        await asyncio.sleep(3)
        os.kill(victims[0].pid, signal.SIGKILL)
        await task

    asyncio.run(kill_during_load())
    assert statuses and set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(200) > len(statuses) * 0.8
    # Ray starts a new replica in its place, and it serves
    wait_for(lambda: len([p for p in replicas(MINILM) if p.pid != victims[0].pid]) == 2, 120,
             "Ray brings the killed replica back")
    before = replica_calls(ray_server, MINILM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert set(asyncio.run(_burst(ray_server, MINILM, 48))) == {200}
        after = replica_calls(ray_server, MINILM)
        if len([r for r in after if after[r] > before.get(r, 0)]) == 2:
            break
    else:
        raise AssertionError("the new replica never answered")


def test_autoscaling_adds_a_replica_under_load_and_removes_it_when_idle(ray_server):
    assert len(replicas(SCALED)) == 1

    async def sustained(seconds: float) -> None:
        end = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=ray_server.base_url, headers=ray_server.headers(), timeout=60) as client:
            async def one(i: int) -> None:
                while time.monotonic() < end and len(replicas(SCALED)) < 2:
                    body = {"model": SCALED, "input": [f"sentence {i} {j} " * 10 for j in range(32)]}
                    assert (await client.post("/v1/openai/embeddings", json=body)).status_code == 200
            await asyncio.gather(*(one(i) for i in range(8)))

    asyncio.run(sustained(90))
    assert len(replicas(SCALED)) == 2, "no second replica under a sustained load"
    wait_for(lambda: len(replicas(SCALED)) == 1, 90, "back to one replica when idle")


def test_chat_through_ray_with_the_openai_sdk(ray_server):
    import openai

    client = openai.OpenAI(base_url=f"{ray_server.base_url}/v1/openai", api_key=ray_server.token)
    whole = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "hi"}], max_tokens=12,
                                           temperature=0, extra_body={"ignore_eos": True})
    assert whole.usage.completion_tokens == 12 and whole.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=12, temperature=0, stream=True,
                                                 extra_body={"ignore_eos": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content  # greedy: the same tokens, streamed
    too_long = httpx.post(f"{ray_server.base_url}/v1/openai/chat/completions", headers=ray_server.headers(),
                          json={"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_tokens"


def test_a_model_split_in_two_shards_runs_a_process_per_shard_in_its_replica(ray_server):
    """tensor_parallel_size 2 on Ray Serve: the replica's vLLM runs a process per shard (on this
    CPU machine each on one of its two cores; on GPUs each on one of the GPUs the replica asked Ray
    for) and generates; its 10 MB tokenizer came over the replica's gRPC (Serve's 4 MiB default
    refused it)."""
    [replica] = replicas(SPLIT)
    shards = [p for p in replica.children(recursive=True) if "VLLM::Worker" in " ".join(p.cmdline())]
    assert len(shards) == 2, [" ".join(p.cmdline()) for p in replica.children(recursive=True)]
    r = httpx.post(f"{ray_server.base_url}/v1/openai/chat/completions", headers=ray_server.headers(), timeout=120,
                   json={"model": SPLIT, "messages": [{"role": "user", "content": "What is the capital of France?"}],
                         "temperature": 0, "max_tokens": 16, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 16, r.text


def _replica_stats(model: str) -> dict:
    """The replica's engine's stats (running sequences) and its feeds, asked through Ray (this
    process joins the cluster)."""
    import ray
    from ray import serve

    from inferd.catalog import Catalog, ModelSpec
    from inferd.cluster.serve import deployment_name, model_app_name

    if not ray.is_initialized():
        ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    # the catalog's entry names no version: its version is "main", as here
    ref = next(Catalog([ModelSpec(id=model, task="text-generation", backend="transformers", source="x")]).refs())
    _, stats = serve.get_deployment_handle(deployment_name(ref), model_app_name(ref)).stats.remote().result()
    return stats


def _running_in_the_replica(model: str) -> int:
    return _replica_stats(model)["running"]


LONG = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 900, "stream": True,
        "ignore_eos": True}


def test_a_stream_cancelled_at_the_client_stops_in_the_replica(ray_server):
    """The ingress's feed from the replica has ended (nothing on it for feeds.IDLE_S): the stream
    starts on its own call, the ingress opens a feed, the stream moves to it; the client leaving
    still stops it in the replica."""
    import ray

    try:
        wait_for(lambda: _replica_stats(TINY)["feeds"] == 0, 30, "the idle feed ends")
        fed = _replica_stats(TINY)["fed"]
        with httpx.Client(base_url=ray_server.base_url, headers=ray_server.headers(), timeout=60) as client:
            with client.stream("POST", "/v1/openai/chat/completions", json=LONG) as response:
                lines = response.iter_lines()
                for _ in range(5):
                    next(lines)
                assert _running_in_the_replica(TINY) == 1  # generating, 900 tokens to go
        wait_for(lambda: _running_in_the_replica(TINY) == 0, 10, "the replica stops the stream the client left")
        assert _replica_stats(TINY)["fed"] == fed + 1  # it moved to the feed
    finally:
        ray.shutdown()


def test_streams_share_a_feed_each_gets_its_own_and_a_cancelled_one_stops(ray_server):
    """Streams by the ingress's feed from the replica (one stream of every request's deltas): each
    gets its own, whole (different lengths, the greedy answer asked alone), one that started on its
    call moves to the feed when it opens, and one the client leaves stops in the replica while the
    other goes on."""
    import ray

    async def streams() -> list[tuple[int, str, str]]:
        async with httpx.AsyncClient(base_url=ray_server.base_url, headers=ray_server.headers(),
                                     timeout=120) as client:
            async def one(i: int) -> tuple[int, str, str]:
                body = {"model": TINY, "messages": [{"role": "user", "content": f"story {i}"}], "max_tokens": 5 + 3 * i,
                        "stream": True, "ignore_eos": True, "temperature": 0,
                        "stream_options": {"include_usage": True}}
                chunks, usage, finish = [], None, None
                async with client.stream("POST", "/v1/openai/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("data: {"):
                            chunk = json.loads(line[6:])
                            usage = chunk.get("usage") or usage
                            for choice in chunk["choices"]:
                                chunks.append(choice["delta"].get("content") or "")
                                finish = choice.get("finish_reason") or finish
                return usage["completion_tokens"], "".join(chunks), finish
            return await asyncio.gather(*(one(i) for i in range(6)))

    try:
        fed = _replica_stats(TINY)["fed"]  # (joins the cluster first: seconds)
        with httpx.Client(base_url=ray_server.base_url, headers=ray_server.headers(), timeout=60) as client:
            with client.stream("POST", "/v1/openai/chat/completions", json=LONG) as kept:
                # no feed yet (or one ending): kept starts on its call, the ingress opens a feed, and
                # kept's rest and the streams below go by it
                kept_lines = kept.iter_lines()
                next(kept_lines)
                results = asyncio.run(streams())
                assert [tokens for tokens, _, _ in results] == [5 + 3 * i for i in range(6)]
                assert all(finish == "length" and text for _, text, finish in results)
                with client.stream("POST", "/v1/openai/chat/completions", json=LONG) as left:
                    lines = left.iter_lines()
                    for _ in range(5):
                        next(lines)
                    stats = _replica_stats(TINY)
                    assert stats["feeds"] == 1 and stats["running"] == 2, stats  # kept and left, 900 tokens each
                    assert stats["fed"] == fed + 8, (stats, fed)  # kept, the six and left: every one by the feed
                wait_for(lambda: _running_in_the_replica(TINY) == 1, 10, "the replica stops the stream the client left")
                for _ in range(20):  # kept goes on
                    next(kept_lines)
        wait_for(lambda: _running_in_the_replica(TINY) == 0, 10, "the replica stops kept when its client leaves")
        for i, (_, text, _) in enumerate(results):  # greedy: the same answer, asked alone
            alone = httpx.post(f"{ray_server.base_url}/v1/openai/chat/completions", headers=ray_server.headers(),
                               timeout=60, json={"model": TINY, "messages": [{"role": "user", "content": f"story {i}"}],
                                                 "max_tokens": 5 + 3 * i, "ignore_eos": True, "temperature": 0})
            assert alone.json()["choices"][0]["message"]["content"] == text
    finally:
        ray.shutdown()
