"""Anthropic's Messages API on the transformers runtime (SmolLM2's real weights), through the
`anthropic` SDK driving the app in process."""

from __future__ import annotations

import pytest

from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import ADMIN_TOKEN, make_settings, start_app

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
async def app(tmp_path_factory, smollm2_dir):
    catalog = Catalog([ModelSpec(id="smol", task="text-generation", backend="transformers", source=str(smollm2_dir))])
    async for h in start_app(make_settings(tmp_path_factory.mktemp("anthropic")), catalog):
        yield h


@pytest.fixture
def sdk(app):
    import anthropic
    import httpx2  # the anthropic SDK's own HTTP client package

    transport = httpx2.ASGITransport(app=app.app)
    return anthropic.AsyncAnthropic(api_key=ADMIN_TOKEN, base_url="http://inferd.test/anthropic", max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=transport, base_url="http://inferd.test"))


async def test_a_message_with_usage_and_stop_reasons(sdk):
    message = await sdk.messages.create(model="smol", max_tokens=40, extra_body={"temperature": 0}, messages=QUESTION,
                                        system="You answer in one short sentence.")
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert "Paris" in message.content[0].text and message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    short = await sdk.messages.create(model="smol", max_tokens=2, extra_body={"temperature": 0}, messages=QUESTION)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2
    stopped = await sdk.messages.create(model="smol", max_tokens=40, extra_body={"temperature": 0}, messages=QUESTION,
                                        stop_sequences=["Paris"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "Paris"
    assert "Paris" not in stopped.content[0].text


async def test_the_event_stream(sdk):
    async with sdk.messages.stream(model="smol", max_tokens=40, extra_body={"temperature": 0}, messages=QUESTION) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert "Paris" in text and final.content[0].text == text and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


async def test_count_tokens_and_errors(sdk, app):
    counted = await sdk.messages.count_tokens(model="smol", messages=QUESTION)
    assert counted.input_tokens > 5
    import anthropic

    with pytest.raises(anthropic.NotFoundError):
        await sdk.messages.create(model="nope", max_tokens=4, messages=QUESTION)
    with pytest.raises(anthropic.BadRequestError):
        await sdk.messages.create(model="smol", max_tokens=0, messages=QUESTION)
    r = await app.client.post("/anthropic/v1/messages", json={"model": "smol", "max_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {}}]}]})
    assert r.status_code == 400 and r.json()["type"] == "error" and "image" in r.json()["error"]["message"]


WEATHER = {"name": "get_weather", "description": "The weather now in a city",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
WEATHER_Q = [{"role": "user", "content": "What is the weather in Paris?"}]


async def test_tool_use_forced_named_and_streamed(sdk):
    message = await sdk.messages.create(model="smol", max_tokens=60, extra_body={"temperature": 0},
                                        messages=WEATHER_Q, tools=[WEATHER], tool_choice={"type": "any"})
    assert message.stop_reason == "tool_use"
    [use] = [b for b in message.content if b.type == "tool_use"]
    assert use.id.startswith("toolu_") and use.name == "get_weather" and isinstance(use.input["location"], str)
    one = await sdk.messages.create(model="smol", max_tokens=60, messages=WEATHER_Q, tools=[WEATHER],
                                    tool_choice={"type": "tool", "name": "get_weather",
                                                 "disable_parallel_tool_use": True})
    assert [b.type for b in one.content] == ["tool_use"] and one.stop_reason == "tool_use"
    async with sdk.messages.stream(model="smol", max_tokens=60, extra_body={"temperature": 0}, messages=WEATHER_Q,
                                   tools=[WEATHER], tool_choice={"type": "any"}) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert "content_block_start" in kinds and "input_json" in kinds  # the SDK's event for input_json_delta
    assert final.content[0].type == "tool_use" and final.content[0].input == use.input
    assert final.stop_reason == "tool_use"


async def test_a_tool_result_round_trip_and_auto(sdk):
    history = [*WEATHER_Q,
               {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                                                 {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                  "input": {"location": "Paris"}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                             "content": [{"type": "text", "text": "21 degrees, sunny"}]}]}]
    answer = await sdk.messages.create(model="smol", max_tokens=30, extra_body={"temperature": 0},
                                       messages=history, tools=[WEATHER])
    assert answer.content[0].type == "text" and answer.content[0].text  # SmolLM2 answers in text under auto
    assert answer.stop_reason in ("end_turn", "max_tokens")
    with_result = await sdk.messages.count_tokens(model="smol", messages=history, tools=[WEATHER])
    without = await sdk.messages.count_tokens(model="smol", messages=history[:1], tools=[WEATHER])
    assert with_result.input_tokens > without.input_tokens + 20


async def test_bad_tools_are_400s(app):
    base = {"model": "smol", "max_tokens": 8, "messages": WEATHER_Q}
    for extra in ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
                  {"tools": [WEATHER], "tool_choice": {"type": "sometimes"}},
                  {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}):
        r = await app.client.post("/anthropic/v1/messages", json={**base, **extra})
        assert r.status_code == 400 and r.json()["type"] == "error", (extra, r.text)


async def test_the_token_in_x_api_key_as_anthropic_clients_send_it(app):
    import httpx

    body = {"model": "smol", "messages": QUESTION}
    async with httpx.AsyncClient(transport=app.client._transport, base_url="http://inferd.test") as bare:
        r = await bare.post("/anthropic/v1/messages/count_tokens", json=body, headers={"x-api-key": ADMIN_TOKEN})
        assert r.status_code == 200 and r.json()["input_tokens"] > 5
        r = await bare.post("/anthropic/v1/messages/count_tokens", json=body, headers={"x-api-key": "inferd_wrong"})
        assert r.status_code == 401 and r.json()["type"] == "error", r.text
        r = await bare.post("/anthropic/v1/messages/count_tokens", json=body)
        assert r.status_code == 401 and "x-api-key" in r.json()["error"]["message"]
        # a Bearer token still works there, and wins over a wrong x-api-key
        r = await bare.post("/anthropic/v1/messages/count_tokens", json=body,
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "x-api-key": "inferd_wrong"})
        assert r.status_code == 200
        # other surfaces take only Authorization: Bearer, as their clients send it
        r = await bare.post("/v1/openai/chat/completions", json={**body, "max_tokens": 2},
                            headers={"x-api-key": ADMIN_TOKEN})
        assert r.status_code == 401
