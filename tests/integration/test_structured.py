"""response_format through the routes, on the transformers runtime: SmolLM2's real weights
for answers, a tiny random model for the mechanics (it knows no JSON, so the grammar does all)."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest

from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import make_settings, sse, start_app

CHAT = "/v1/openai/chat/completions"
CITY = {"type": "object", "properties": {"country": {"type": "string", "maxLength": 40},
                                         "capital": {"type": "string", "maxLength": 40}},
        "required": ["country", "capital"], "additionalProperties": False}


@pytest.fixture(scope="module")
async def app(tmp_path_factory, smollm2_dir, tiny_lm_dir):
    catalog = Catalog([
        ModelSpec(id="smol", task="text-generation", backend="transformers", source=str(smollm2_dir)),
        ModelSpec(id="tiny", task="text-generation", backend="transformers", source=str(tiny_lm_dir),
                  limits={"context_length": 1024}),
    ])
    async for h in start_app(make_settings(tmp_path_factory.mktemp("structured")), catalog):
        yield h


def ask(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


async def test_json_schema_answer_from_smollm2(app):
    body = {"model": "smol", "messages": ask("What is the capital of France? Answer in JSON."), "max_tokens": 60,
            "temperature": 0, "response_format": {"type": "json_schema",
                                                  "json_schema": {"name": "city", "schema": CITY, "strict": True}}}
    r = await app.client.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    answer = json.loads(choice["message"]["content"])
    jsonschema.validate(answer, CITY)
    assert "Paris" in answer["capital"] and choice["finish_reason"] == "stop"


async def test_json_object_under_concurrency_with_tight_budgets(app):
    async def one(i):
        body = {"model": "tiny", "messages": ask(f"data {i}"), "max_tokens": 12 + i % 20, "seed": i,
                "response_format": {"type": "json_object"}}
        r = await app.client.post(CHAT, json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]

    for choice in await asyncio.gather(*[one(i) for i in range(40)]):
        assert isinstance(json.loads(choice["message"]["content"]), dict) and choice["finish_reason"] == "stop"


async def test_streamed_json_schema_parses_when_joined(app):
    body = {"model": "tiny", "messages": ask("x"), "max_tokens": 40, "seed": 3, "stream": True,
            "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": CITY}}}
    text = ""
    for chunk in await sse(app.client, CHAT, body):
        for choice in chunk.get("choices") or []:
            text += choice["delta"].get("content") or ""
    jsonschema.validate(json.loads(text), CITY)


async def test_regex_on_completions_and_native(app):
    r = await app.client.post("/v1/openai/completions", json={
        "model": "tiny", "prompt": "Code:", "max_tokens": 10, "seed": 1,
        "response_format": {"type": "regex", "regex": r"[A-Z]{3}-\d{4}"}})
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"[A-Z]{3}-\d{4}", r.json()["choices"][0]["text"])
    r = await app.client.post("/v1/inference/tiny", json={"input": "x", "max_new_tokens": 30,
                                                          "response_format": {"type": "json_object"}})
    assert r.status_code == 200, r.text
    assert isinstance(json.loads(r.json()["results"][0]["generated_text"]), dict)


async def test_bad_formats_are_400s_that_say_why(app):
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}
    r = await app.client.post(CHAT, json={"model": "tiny", "messages": ask("x"), "response_format": bad_schema})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    r = await app.client.post(CHAT, json={"model": "tiny", "messages": ask("x"), "stream": True,
                                          "response_format": {"type": "regex", "regex": "(open"}})
    assert r.status_code == 400 and "regex" in r.json()["error"]["message"]
    r = await app.client.post(CHAT, json={"model": "tiny", "messages": ask("x"),
                                          "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})
    assert r.status_code == 400 and "schema" in r.json()["error"]["message"]
    r = await app.client.post("/v1/inference/tiny", json={"input": "x", "response_format": {"type": "yaml"}})
    assert r.status_code == 400


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather now in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string", "maxLength": 40},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["location"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                                       "required": ["zone"], "additionalProperties": False}}}


async def test_smollm2_makes_a_forced_weather_call(app):
    r = await app.client.post(CHAT, json={"model": "smol", "messages": ask("What is the weather in Paris?"),
                                          "temperature": 0, "max_tokens": 60, "tools": [WEATHER],
                                          "tool_choice": "required"})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments, dict) and isinstance(arguments["location"], str)


async def test_required_and_named_calls_validate_under_load(app):
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}

    async def one(i, choice):
        r = await app.client.post(CHAT, json={"model": "tiny", "messages": ask(f"q{i}"), "seed": i,
                                              "max_tokens": 40 + i % 16, "tools": [WEATHER, TIME],
                                              "tool_choice": choice})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]

    named = {"type": "function", "function": {"name": "get_time"}}
    results = await asyncio.gather(*[one(i, "required" if i % 2 else named) for i in range(30)])
    for i, choice in enumerate(results):
        calls = choice["message"]["tool_calls"]
        assert choice["message"]["content"] is None and (i % 2 or len(calls) == 1)
        for call in calls:
            name = call["function"]["name"]
            jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[name])
            assert i % 2 or name == "get_time"
        assert choice["finish_reason"] == ("tool_calls" if i % 2 else "stop")
        assert len({c["id"] for c in calls}) == len(calls)


async def test_auto_lets_smollm2_answer_in_text(app):
    # SmolLM2-135M does not call tools on its own (its P("<") is ~1% under inferd's tool prompt):
    # auto answers in text, with no tags in it
    r = await app.client.post(CHAT, json={"model": "smol", "messages": ask("What is 2+2?"), "temperature": 0,
                                          "max_tokens": 30, "tools": [WEATHER]})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "4" in choice["message"]["content"]
    assert "tool_calls" not in choice["message"] and "<tool" not in choice["message"]["content"]


async def test_a_streamed_call_names_itself_then_sends_arguments(app):
    body = {"model": "tiny", "messages": ask("x"), "max_tokens": 60, "seed": 5, "stream": True,
            "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False}
    deltas, finish = [], None
    for chunk in await sse(app.client, CHAT, body):
        for choice in chunk.get("choices") or []:
            deltas.append(choice["delta"])
            finish = choice["finish_reason"] or finish
    calls = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert isinstance(json.loads(arguments)["location"], str)
    assert not any(d.get("content") for d in deltas) and finish == "tool_calls"


async def test_wrong_tool_choices_are_400s(app):
    base = {"model": "tiny", "messages": ask("x"), "max_tokens": 8, "tools": [WEATHER]}
    r = await app.client.post(CHAT, json={**base, "tool_choice": "sometimes"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
    r = await app.client.post(CHAT, json={**base, "response_format": {"type": "json_object"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    r = await app.client.post(CHAT, json={**base, "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
    r = await app.client.post(CHAT, json={**base, "tools": [{"type": "function"}], "tool_choice": "required"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    r = await app.client.post(CHAT, json={**base, "tool_choice": "none"})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None


async def test_a_tool_result_round_trip_renders(app):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}
    messages = [*ask("What is the weather in Paris?"), {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'}]
    r = await app.client.post(CHAT, json={"model": "smol", "messages": messages, "max_tokens": 20, "temperature": 0,
                                          "tools": [WEATHER], "tool_choice": "none"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
