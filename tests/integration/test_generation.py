"""Chat, completions and native text-generation in process, on the transformers runtime:
SmolLM2's real weights for answers, a tiny random model for the mechanics."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from inferd.accounts.models import UsageRecord
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import make_settings, sse, start_app

PRICING = {"type": "tokens", "cents_per_input_token": 0.00001, "cents_per_output_token": 0.00002}
CHAT = "/v1/openai/chat/completions"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
async def gen(tmp_path_factory, smollm2_dir, tiny_lm_dir):
    catalog = Catalog([
        ModelSpec(id="smol", task="text-generation", backend="transformers", source=str(smollm2_dir),
                  pricing=PRICING, aliases=("chat-default",)),
        ModelSpec(id="tiny", task="text-generation", backend="transformers", source=str(tiny_lm_dir),
                  pricing=PRICING, limits={"context_length": 64}),
    ])
    async for h in start_app(make_settings(tmp_path_factory.mktemp("gen")), catalog):
        yield h


async def test_chat_answers_with_usage_and_cost(gen):
    r = await gen.client.post(CHAT, json={"model": "smol", "messages": QUESTION, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert "Paris" in choice["message"]["content"] and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["estimated_cost"] == pytest.approx(
        (usage["prompt_tokens"] * 0.00001 + usage["completion_tokens"] * 0.00002) / 100)
    await gen.state.usage.flush()
    async with gen.state.db.sessions() as session:
        row = await session.scalar(select(UsageRecord).where(UsageRecord.request_id == r.headers["x-request-id"]))
    assert row.status == "succeeded" and row.task == "text-generation"
    assert (row.input_tokens, row.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])


async def test_chat_stream_matches_the_plain_answer(gen):
    plain = (await gen.client.post(CHAT, json={"model": "smol", "messages": QUESTION, "temperature": 0})).json()
    chunks = await sse(gen.client, CHAT, {"model": "smol", "messages": QUESTION, "temperature": 0, "stream": True})
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]  # DeepInfra's default
    assert all("usage" not in c for c in chunks[:-1])


async def test_include_usage_adds_a_choiceless_usage_chunk(gen):
    chunks = await sse(gen.client, CHAT, {"model": "smol", "messages": QUESTION, "max_tokens": 4, "stream": True,
                                          "stream_options": {"include_usage": True}})
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" and "usage" not in chunks[-2]


async def test_stop_strings_are_never_sent(gen):
    body = {"model": "smol", "messages": QUESTION, "temperature": 0, "stop": ["Paris", "nothing"]}
    plain = (await gen.client.post(CHAT, json=body)).json()["choices"][0]
    assert plain["message"]["content"] == "The capital of France is " and plain["finish_reason"] == "stop"
    chunks = await sse(gen.client, CHAT, {**body, "stream": True})
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "The capital of France is "


async def test_n_seed_and_sampling_parameters(gen):
    body = {"model": "tiny", "messages": QUESTION, "n": 2, "seed": 7, "temperature": 1.0, "top_p": 0.9, "top_k": 50,
            "min_p": 0.01, "presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.1,
            "max_tokens": 12, "ignore_eos": True}
    a = (await gen.client.post(CHAT, json=body)).json()
    b = (await gen.client.post(CHAT, json=body)).json()
    assert [c["index"] for c in a["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in a["choices"]] == [c["message"]["content"] for c in b["choices"]]
    assert a["usage"]["completion_tokens"] == 24  # counted over both choices
    assert a["choices"][0]["message"]["content"] != a["choices"][1]["message"]["content"]


async def test_chat_logprobs(gen):
    r = await gen.client.post(CHAT, json={"model": "tiny", "messages": QUESTION, "max_tokens": 3, "logprobs": True,
                                          "top_logprobs": 2, "temperature": 0})
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 3
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"} and len(item["top_logprobs"]) == 2
        assert item["logprob"] == pytest.approx(item["top_logprobs"][0]["logprob"])  # greedy = the top token


async def test_completions_echo_logprobs_and_several_prompts(gen):
    r = await gen.client.post("/v1/completions", json={"model": "tiny", "prompt": ["Hello world", "One two"],
                                                        "max_tokens": 3, "logprobs": 1, "echo": True, "temperature": 0})
    body = r.json()
    assert body["object"] == "text_completion" and len(body["choices"]) == 2
    first = body["choices"][0]
    assert first["text"].startswith("Hello world")
    lp = first["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"])
    assert lp["text_offset"] == sorted(lp["text_offset"]) and "".join(lp["tokens"]) == first["text"]
    assert body["usage"]["completion_tokens"] == 6


async def test_completions_stream(gen):
    chunks = await sse(gen.client, "/v1/openai/completions",
                       {"model": "smol", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0,
                        "stream": True})
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert "Paris" in text and chunks[-1]["usage"]["completion_tokens"] == 5


async def test_native_text_generation(gen):
    r = await gen.client.post("/v1/inference/smol", json={"input": "The capital of France is", "max_new_tokens": 4,
                                                           "temperature": 0})
    body = r.json()
    assert "Paris" in body["results"][0]["generated_text"]
    assert body["num_tokens"] == 4 and body["num_input_tokens"] == 5
    assert body["inference_status"]["status"] == "succeeded" and body["inference_status"]["tokens_generated"] == 4
    assert body["request_id"] == r.headers["x-request-id"]


async def test_native_stream_events(gen):
    events = await sse(gen.client, "/v1/inference/smol", {"input": "The capital of France is", "max_new_tokens": 4,
                                                            "temperature": 0, "stream": True})
    assert len(events) == 4
    assert all(set(e["token"]) == {"id", "text", "logprob", "special"} for e in events)
    assert all(e["generated_text"] is None for e in events[:-1])
    assert events[-1]["generated_text"] == "".join(e["token"]["text"] for e in events)
    assert events[-1]["details"]["finish_reason"] == "length"


async def test_too_long_prompt_and_budget_are_clear_400s(gen):
    long = [{"role": "user", "content": "word " * 200}]
    r = await gen.client.post(CHAT, json={"model": "tiny", "messages": long})
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]
    r = await gen.client.post(CHAT, json={"model": "tiny", "messages": QUESTION, "max_tokens": 1000})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    r = await gen.client.post("/v1/inference/tiny", json={"input": "word " * 200})
    assert r.status_code == 400 and "context" in r.json()["error"]


async def test_bad_requests(gen):
    c = gen.client
    assert (await c.post(CHAT, json={"model": "nope", "messages": QUESTION})).status_code == 404
    assert (await c.post(CHAT, json={"model": "tiny", "messages": []})).status_code == 400
    assert (await c.post(CHAT, json={"model": "tiny", "messages": QUESTION, "stop": ["a"] * 5})).status_code == 400
    assert (await c.post(CHAT, json={"model": "tiny", "messages": QUESTION, "temperature": -1})).status_code == 400
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    r = await c.post(CHAT, json={"model": "tiny", "messages": image})
    assert r.status_code == 400 and "image_url" in r.json()["error"]["message"]
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]
    assert (await c.post(CHAT, json={"model": "tiny", "messages": parts, "max_tokens": 2})).status_code == 200
    assert (await c.post(CHAT, json={"model": "chat-default", "messages": QUESTION, "max_tokens": 1})).status_code == 200


async def test_bad_prompts_are_400s_and_leave_a_running_stream_alone(gen):
    c = gen.client
    running = asyncio.create_task(c.post("/v1/openai/completions", json={"model": "tiny", "prompt": "Once", "max_tokens": 24,
                                                                              "ignore_eos": True}))
    r = await c.post("/v1/openai/completions", json={"model": "tiny", "prompt": [5, 10**7], "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt" and "vocabulary" in r.json()["error"]["message"]
    r = await c.post("/v1/openai/completions", json={"model": "tiny", "prompt": [], "max_tokens": 2})
    assert r.status_code == 400
    r = await c.post("/v1/openai/completions", json={"model": "tiny", "prompt": "", "max_tokens": 2})
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]  # SmolLM2's tokenizer adds no BOS
    r = await c.post("/v1/inference/tiny", json={"input": ""})
    assert r.status_code == 400 and "empty" in r.json()["error"]
    done = await running
    assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 24


async def test_an_error_after_the_first_byte_is_an_error_chunk(gen, monkeypatch):
    engine = gen.state.pool.get("tiny")
    original = engine._step
    calls = {"n": 0}

    def flaky(batch, admitted):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("the model broke")
        return original(batch, admitted)

    monkeypatch.setattr(engine, "_step", flaky)
    chunks = await sse(gen.client, CHAT, {"model": "tiny", "messages": QUESTION, "max_tokens": 20, "stream": True,
                                          "ignore_eos": True})
    assert "error" in chunks[-1] and "the model broke" in chunks[-1]["error"]["message"]
    monkeypatch.undo()
    assert (await gen.client.post(CHAT, json={"model": "tiny", "messages": QUESTION, "max_tokens": 2})).status_code == 200
