"""Structured output against a real `inferd serve` on the default catalog (SmolLM2 on vLLM): the
openai SDK (json_object, json_schema, streamed, `chat.completions.parse` with a pydantic model)
and LiteLLM's deepinfra/ provider. Every answer must parse and validate."""

from __future__ import annotations

import json

import jsonschema
import pytest

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
CITY = {"type": "object", "properties": {"country": {"type": "string", "maxLength": 40},
                                         "capital": {"type": "string", "maxLength": 40}},
        "required": ["country", "capital"], "additionalProperties": False}


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.base_url}/v1/openai", api_key=server.token, max_retries=0)


def test_json_object_with_the_openai_sdk(client):
    for seed in range(6):
        r = client.chat.completions.create(model=SMOL, messages=QUESTION, seed=seed, max_tokens=30 + 10 * seed,
                                           response_format={"type": "json_object"})
        assert isinstance(json.loads(r.choices[0].message.content), dict), r.choices[0].message.content
        assert r.choices[0].finish_reason == "stop"


def test_json_schema_plain_and_streamed(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    r = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, max_tokens=60,
                                       response_format=fmt)
    answer = json.loads(r.choices[0].message.content)
    jsonschema.validate(answer, CITY)
    assert "Paris" in answer["capital"]
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=SMOL, messages=QUESTION, temperature=0, max_tokens=60, response_format=fmt, stream=True) if c.choices)
    assert json.loads(text) == answer


def test_parse_into_a_pydantic_model(client):
    from pydantic import BaseModel

    class City(BaseModel):
        country: str
        capital: str

    r = client.chat.completions.parse(model=SMOL, messages=QUESTION, temperature=0, max_tokens=60,
                                      response_format=City)
    city = r.choices[0].message.parsed
    assert isinstance(city, City) and "Paris" in city.capital


def test_litellm_deepinfra_json_object(server):
    import litellm

    r = litellm.completion(model=f"deepinfra/{SMOL}", messages=QUESTION, api_base=f"{server.base_url}/v1/openai",
                           api_key=server.token, max_tokens=40, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_a_bad_schema_is_a_400_the_sdk_raises(client):
    import openai

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=SMOL, messages=QUESTION, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}})


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather now in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
WEATHER_Q = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_forced_tool_call_with_the_openai_sdk(client):
    r = client.chat.completions.create(model=SMOL, messages=WEATHER_Q, tools=[WEATHER], tool_choice="required",
                                       temperature=0, max_tokens=60)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["location"], str)
    named = client.chat.completions.create(model=SMOL, messages=WEATHER_Q, tools=[WEATHER], temperature=0,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                           max_tokens=60, stream=True)
    pieces = [c.choices[0].delta for c in named if c.choices]
    calls = [p.tool_calls[0] for p in pieces if p.tool_calls]
    assert calls[0].function.name == "get_weather"
    assert isinstance(json.loads("".join(c.function.arguments or "" for c in calls))["location"], str)
