"""Both runtimes answer the same greedy request alike on the wire: text, stop handling,
finish reasons, usage and the logprobs' shape (SmolLM2 fp32 on vLLM and on transformers)."""

from __future__ import annotations

import pytest

from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import make_settings, start_app

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PRICING = {"type": "tokens", "cents_per_input_token": 0.000002, "cents_per_output_token": 0.000004,
           "cents_per_cached_input_token": 0.000001}


@pytest.fixture(scope="module")
async def both(tmp_path_factory, smollm2_dir):
    limits = {"context_length": 2048, "max_batch_size": 8}
    catalog = Catalog([
        ModelSpec(id="on-transformers", task="text-generation", backend="transformers", source=str(smollm2_dir),
                  limits=limits),
        ModelSpec(id="on-vllm", task="text-generation", backend="vllm", source=str(smollm2_dir), limits=limits,
                  options={"dtype": "float32", "enforce_eager": True, "kv_cache_gib": 0.5}, pricing=PRICING),
    ])
    async for h in start_app(make_settings(tmp_path_factory.mktemp("parity")), catalog):
        for engine in h.state.pool.engines():
            assert engine.state.value == "ready", engine.error
        yield h


def comparable(body: dict) -> dict:
    body = {k: v for k, v in body.items() if k not in ("id", "created", "model")}
    # vLLM's prefix cache (which transformers has not) is in the usage too
    body["usage"] = {k: v for k, v in body["usage"].items() if k not in ("estimated_cost", "prompt_tokens_details")}
    return body


def rounded(logprobs):
    return [(t["token"], round(t["logprob"], 2), [x["token"] for x in t["top_logprobs"]]) for t in logprobs["content"]]


@pytest.mark.parametrize("extra", [
    {},
    {"stop": ["Paris"]},
    {"max_tokens": 4},
])
async def test_same_greedy_chat_answer(both, extra):
    answers = {}
    for model in ("on-transformers", "on-vllm"):
        r = await both.client.post("/v1/openai/chat/completions",
                                   json={"model": model, "messages": QUESTION, "temperature": 0, **extra})
        assert r.status_code == 200, r.text
        answers[model] = comparable(r.json())
    assert answers["on-transformers"] == answers["on-vllm"]


async def test_same_logprobs_shape_and_values(both):
    bodies = {}
    for model in ("on-transformers", "on-vllm"):
        r = await both.client.post("/v1/openai/chat/completions", json={
            "model": model, "messages": QUESTION, "temperature": 0, "max_tokens": 6, "logprobs": True,
            "top_logprobs": 3})
        bodies[model] = r.json()["choices"][0]["logprobs"]
    assert rounded(bodies["on-transformers"]) == rounded(bodies["on-vllm"])


async def test_same_completion_with_echo(both):
    answers = {}
    for model in ("on-transformers", "on-vllm"):
        r = await both.client.post("/v1/completions", json={
            "model": model, "prompt": "The capital of France is", "temperature": 0, "max_tokens": 5, "echo": True,
            "logprobs": 1})
        body = r.json()["choices"][0]
        answers[model] = (body["text"], body["finish_reason"], body["logprobs"]["tokens"],
                          [None if x is None else round(x, 2) for x in body["logprobs"]["token_logprobs"]],
                          body["logprobs"]["text_offset"])
    assert answers["on-transformers"] == answers["on-vllm"]


async def test_same_native_stream(both):
    texts = {}
    for model in ("on-transformers", "on-vllm"):
        async with both.client.stream("POST", f"/v1/inference/{model}", json={
                "input": "The capital of France is", "max_new_tokens": 5, "temperature": 0, "stream": True}) as r:
            texts[model] = [line async for line in r.aiter_lines() if line.startswith("data: ")][-2]
    import json

    t, v = (json.loads(texts[m][6:]) for m in ("on-transformers", "on-vllm"))
    assert t["generated_text"] == v["generated_text"] and t["details"]["finish_reason"] == v["details"]["finish_reason"]


CITY = {"type": "object", "properties": {"country": {"type": "string", "maxLength": 40},
                                         "capital": {"type": "string", "maxLength": 40}},
        "required": ["country", "capital"], "additionalProperties": False}


async def test_structured_output_on_both_runtimes(both):
    import asyncio
    import json

    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    for model in ("on-transformers", "on-vllm"):
        r = await both.client.post("/v1/openai/chat/completions", json={
            "model": model, "messages": QUESTION, "temperature": 0, "max_tokens": 80, "response_format": fmt})
        assert r.status_code == 200, r.text
        answer = json.loads(r.json()["choices"][0]["message"]["content"])
        jsonschema.validate(answer, CITY)
        assert "Paris" in answer["capital"], (model, answer)

        async def sampled(seed, model=model):
            r = await both.client.post("/v1/openai/chat/completions", json={
                "model": model, "messages": QUESTION, "seed": seed, "max_tokens": 24 + 8 * seed,
                "response_format": {"type": "json_object"}})
            return r.json()["choices"][0]

        for choice in await asyncio.gather(*[sampled(seed) for seed in range(8)]):
            assert choice["finish_reason"] == "stop", (model, choice)
            assert isinstance(json.loads(choice["message"]["content"]), dict)


async def test_tool_calls_on_both_runtimes(both):
    """The same tool grammar and parser on both runtimes: forced calls (sampled, several budgets)
    validate, the greedy call is the same, a streamed call names itself first, auto answers text."""
    import asyncio
    import json

    import jsonschema

    weather = {"type": "object", "properties": {"location": {"type": "string", "maxLength": 40},
                                                "unit": {"enum": ["c", "f"]}}, "required": ["location", "unit"]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": weather}},
             {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    greedy = []
    for model in ("on-transformers", "on-vllm"):
        async def ask(seed, model=model, **extra):
            r = await both.client.post("/v1/openai/chat/completions", json={
                "model": model, "messages": question, "seed": seed, "max_tokens": 40 + 8 * seed, "tools": tools,
                **extra})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]

        for choice in await asyncio.gather(*[ask(seed, tool_choice="required") for seed in range(8)]):
            assert choice["finish_reason"] == "tool_calls", (model, choice)
            for call in choice["message"]["tool_calls"]:
                if call["function"]["name"] == "get_weather":
                    jsonschema.validate(json.loads(call["function"]["arguments"]), weather)
        first = await ask(0, tool_choice="required", temperature=0)
        greedy.append([c["function"] for c in first["message"]["tool_calls"]])
        text = await ask(0, temperature=0)  # auto: SmolLM2 answers in text
        assert text["finish_reason"] in ("stop", "length") and "<tool" not in text["message"]["content"]
    assert greedy[0] == greedy[1]


async def test_many_sampled_structured_answers_on_vllm(both):
    """The vLLM runtime's logits processor under load, sampled (temperature 1) at tight budgets:
    json_object, a nested schema, a regex and forced tool calls, 20 each (every budget of 20 once,
    in batches of 8); all parse and validate."""
    import asyncio
    import json
    import re

    import jsonschema

    from tests.unit.engine.test_structured import SCHEMA, TOOLS

    pattern = r"[A-Z][a-z]{2,6}-\d{3}"
    cases = [
        ({"response_format": {"type": "json_object"}}, lambda text: isinstance(json.loads(text), dict)),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "pet", "schema": SCHEMA}}},
         lambda text: jsonschema.validate(json.loads(text), SCHEMA) is None),
        ({"response_format": {"type": "regex", "regex": pattern}}, lambda text: re.fullmatch(pattern, text)),
    ]

    async def one(seed, extra):
        r = await both.client.post("/v1/openai/chat/completions", json={
            "model": "on-vllm", "messages": QUESTION, "seed": seed, "temperature": 1.0,
            "max_tokens": 30 + seed % 20, **extra})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]

    for extra, valid in cases:
        for choice in await asyncio.gather(*[one(seed, extra) for seed in range(20)]):
            assert choice["finish_reason"] == "stop" and valid(choice["message"]["content"]), (extra, choice)
    tools = {"tools": TOOLS, "tool_choice": "required"}
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for choice in await asyncio.gather(*[one(seed, {**tools, "max_tokens": 48 + seed % 20}) for seed in range(20)]):
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["tool_calls"], choice
        for call in choice["message"]["tool_calls"]:
            jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])


async def test_prefix_cache_hits_are_reported_and_billed_at_the_cached_rate(both):
    """vLLM reports the prompt tokens its prefix cache had; the usage row and the response say the same."""
    from sqlalchemy import select

    from inferd.accounts.models import UsageRecord

    long = [{"role": "user", "content": "Tell me about the history of France. " * 40}]
    usages, ids = [], []
    for _ in range(2):
        r = await both.client.post("/v1/openai/chat/completions",
                                   json={"model": "on-vllm", "messages": long, "temperature": 0, "max_tokens": 2})
        assert r.status_code == 200, r.text
        usages.append(r.json()["usage"])
        ids.append(r.headers["x-request-id"])
    assert "prompt_tokens_details" not in usages[0]
    cached = usages[1].get("prompt_tokens_details", {}).get("cached_tokens", 0)
    assert 0 < cached <= usages[1]["prompt_tokens"]
    await both.state.usage.flush()
    async with both.state.db.sessions() as session:
        row = await session.scalar(select(UsageRecord).where(UsageRecord.request_id == ids[1]))
    assert row.cached_input_tokens == cached and row.input_tokens == usages[1]["prompt_tokens"]
    uncached = usages[1]["prompt_tokens"] - cached
    # 0.000002 cents = 20 nano-dollars a token, cached 10, output 40
    expected = uncached * 20 + cached * 10 + usages[1]["completion_tokens"] * 40
    assert row.cost_nano_usd == expected == round(usages[1]["estimated_cost"] * 10**9)
    assert round(usages[0]["estimated_cost"] * 10**9) == usages[0]["prompt_tokens"] * 20 + 2 * 40
