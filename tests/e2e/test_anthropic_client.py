"""The `anthropic` SDK against a real `inferd serve` on the default catalog (SmolLM2 on vLLM)."""

from __future__ import annotations

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_anthropic_sdk_message_stream_and_count(server):
    import anthropic

    client = anthropic.Anthropic(api_key=server.token, base_url=f"{server.base_url}/anthropic", max_retries=0)
    message = client.messages.create(model="default", max_tokens=40, messages=QUESTION,
                                     extra_body={"temperature": 0})
    assert "Paris" in message.content[0].text and message.stop_reason == "end_turn"
    with client.messages.stream(model="default", max_tokens=40, messages=QUESTION,
                                extra_body={"temperature": 0}) as stream:
        text = "".join(stream.text_stream)
    assert text == message.content[0].text
    stopped = client.messages.create(model="default", max_tokens=40, messages=QUESTION, stop_sequences=["Paris"],
                                     extra_body={"temperature": 0})
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "Paris"
    assert client.messages.count_tokens(model="default", messages=QUESTION).input_tokens > 5
