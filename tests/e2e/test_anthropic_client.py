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


def test_litellm_anthropic_provider_and_curl_send_x_api_key(server):
    """LiteLLM's `anthropic/` provider and Anthropic's curl examples send the token in `x-api-key`."""
    import json
    import subprocess

    import litellm

    result = litellm.completion(model="anthropic/default", api_base=f"{server.base_url}/anthropic",
                                api_key=server.token, messages=QUESTION, max_tokens=20, temperature=0)
    assert "Paris" in result.choices[0].message.content
    out = subprocess.run(
        ["curl", "-s", f"{server.base_url}/anthropic/v1/messages", "-H", f"x-api-key: {server.token}",
         "-H", "anthropic-version: 2023-06-01", "-H", "content-type: application/json",
         "-d", json.dumps({"model": "default", "max_tokens": 20, "temperature": 0, "messages": QUESTION})],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "Paris" in json.loads(out)["content"][0]["text"], out
