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
