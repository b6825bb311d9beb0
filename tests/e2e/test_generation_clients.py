"""Chat and completions against a real `inferd serve` on the default catalog (SmolLM2 on vLLM),
with the clients people use: the openai SDK, LiteLLM's deepinfra/ provider, raw SSE."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.base_url}/v1/openai", api_key=server.token, max_retries=0)


def test_smollm2_knows_the_capital_of_france(client):
    r = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.model_extra["estimated_cost"] > 0


def test_aliases_of_llm_interface(client):
    for alias in ("default", "small", "agent"):
        r = client.chat.completions.create(model=alias, messages=QUESTION, temperature=0, max_tokens=12)
        assert "Paris" in r.choices[0].message.content


def test_stream_and_include_usage(client):
    plain = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0).choices[0].message.content
    chunks = list(client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
    assert chunks[-1].usage is not None  # DeepInfra's default: usage on the last chunk
    chunks = list(client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}, max_tokens=5))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-2].choices[0].finish_reason == "length"


def test_n_stop_and_seed(client):
    r = client.chat.completions.create(model=SMOL, messages=QUESTION, n=2, temperature=1.0, max_tokens=16, seed=3)
    again = client.chat.completions.create(model=SMOL, messages=QUESTION, n=2, temperature=1.0, max_tokens=16, seed=3)
    assert len(r.choices) == 2 and [c.index for c in r.choices] == [0, 1]
    assert [c.message.content for c in r.choices] == [c.message.content for c in again.choices]
    stopped = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, stop=["Paris"])
    assert stopped.choices[0].message.content == "The capital of France is "
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, stop=["Paris"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "The capital of France is "


def test_logprobs_and_echo(client):
    r = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, max_tokens=4, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 3 for t in content)
    assert "".join(t.token for t in content) == r.choices[0].message.content
    c = client.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=3, logprobs=2, echo=True,
                                  temperature=0)
    choice = c.choices[0]
    assert choice.text.startswith("The capital of France is")
    assert choice.logprobs.token_logprobs[0] is None and len(choice.logprobs.tokens) == 5 + 3
    assert "".join(choice.logprobs.tokens) == choice.text


def test_litellm_deepinfra_provider_sync_stream_async(server):
    import litellm

    kwargs = dict(model=f"deepinfra/{SMOL}", messages=QUESTION, api_base=f"{server.base_url}/v1/openai",
                  api_key=server.token, temperature=0, max_tokens=16)
    r = litellm.completion(**kwargs)
    assert "Paris" in r.choices[0].message.content
    text = "".join(c.choices[0].delta.content or "" for c in litellm.completion(**kwargs, stream=True))
    assert "Paris" in text

    async def go():
        return await litellm.acompletion(**kwargs)

    assert "Paris" in asyncio.run(go()).choices[0].message.content


def test_raw_sse_native_route(server):
    events = []
    with httpx.stream("POST", f"{server.base_url}/v1/inference/{SMOL}", headers=server.headers(),
                      json={"input": "The capital of France is", "max_new_tokens": 4, "temperature": 0,
                            "stream": True}, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert "Paris" in last["generated_text"] and last["details"]["finish_reason"] == "length"


def running(server) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    match = re.search(r'inferd_running_sequences\{model="%s"\} (\S+)' % re.escape(SMOL), text)
    return float(match.group(1)) if match else 0.0


def test_a_disconnecting_stream_frees_its_slot(server):
    with httpx.stream("POST", f"{server.base_url}/v1/openai/chat/completions", headers=server.headers(),
                      json={"model": SMOL, "messages": QUESTION, "max_tokens": 2000, "stream": True,
                            "ignore_eos": True}, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(5):
            next(lines)
        assert running(server) == 1
    deadline = time.monotonic() + 10
    while running(server) != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running(server) == 0
    pattern = r'inferd_model_requests_total\{model="%s",status="cancelled",task="text-generation"\} [1-9]' % re.escape(SMOL)
    while not re.search(pattern, httpx.get(f"{server.base_url}/metrics", timeout=5).text):
        assert time.monotonic() < deadline + 10, "the cancelled request was not metered"
        time.sleep(0.1)
