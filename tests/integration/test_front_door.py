"""The front door, probed as an attacker would: admission before the body, bounded bodies and
lists, safe templates, server-made request ids, and no 500 for bad input. In process, on
MiniLM and a tiny random Llama (transformers runtime)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import select

from inferd.accounts.models import UsageRecord
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import ADMIN_TOKEN, MINILM, make_settings, start_app

CHAT = "/v1/openai/chat/completions"
HI = [{"role": "user", "content": "hi"}]
LIMIT = 128 * 1024


@pytest.fixture(scope="module")
async def door(tmp_path_factory, minilm_path, tiny_lm_dir):
    catalog = Catalog([
        ModelSpec(id=MINILM, task="embeddings", backend="sentence-transformers", source=str(minilm_path)),
        ModelSpec(id="tiny", task="text-generation", backend="transformers", source=str(tiny_lm_dir),
                  limits={"context_length": 256, "max_batch_size": 8, "queue_size": 16}),
    ])
    settings = make_settings(tmp_path_factory.mktemp("door"), max_body_bytes=LIMIT, metrics_auth=True,
                             template_timeout_s=1.0)
    async for h in start_app(settings, catalog):
        yield h


async def raw_call(app, method: str, path: str, headers: dict[str, str], chunks: list[bytes]):
    """Drive the ASGI app by hand: the status, the body, and how many body chunks it read."""
    read = 0
    sent: list[dict] = []

    async def receive():
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("test", 80), "client": ("test", 1),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict((k.decode(), v.decode()) for k, v in start["headers"]), json.loads(body), read


# --- admission: the token before the body, and a bounded body


async def test_no_token_is_refused_before_a_byte_of_the_body_is_read(door):
    chunk = b"x" * 1024
    status, _, body, read = await raw_call(
        door.app, "POST", "/v1/openai/embeddings",
        {"content-type": "application/json", "content-length": str(1024 * 100)}, [chunk] * 100)
    assert status == 401 and read == 0 and body["error"]["type"] == "authentication_error"
    status, _, _, read = await raw_call(
        door.app, "POST", "/v1/openai/embeddings",
        {"content-type": "application/json", "authorization": "Bearer inferd_wrong"}, [chunk] * 100)
    assert status == 401 and read == 0


@pytest.mark.parametrize("path, shape", [
    ("/v1/openai/embeddings", lambda b: b["error"]["code"] is None and "larger" in b["error"]["message"]),
    ("/v1/inference/tiny", lambda b: "larger" in b["error"]),
    ("/anthropic/v1/messages", lambda b: b["type"] == "error" and "larger" in b["error"]["message"]),
    ("/v1/rerank", lambda b: "larger" in b["message"]),
])
async def test_a_declared_body_past_the_limit_is_413_in_the_dialects_shape_unread(door, path, shape):
    status, headers, body, read = await raw_call(
        door.app, "POST", path, {"content-type": "application/json", "content-length": str(LIMIT + 1),
                                 "authorization": f"Bearer {ADMIN_TOKEN}"}, [b"{"])
    assert status == 413 and read == 0 and shape(body), body
    assert headers["connection"] == "close"


async def test_a_chunked_body_is_cut_off_at_the_limit(door):
    chunks = [b"[" + b"1," * 2048] * 64  # ~256 KiB, no Content-Length
    status, _, body, read = await raw_call(
        door.app, "POST", "/v1/openai/embeddings",
        {"content-type": "application/json", "authorization": f"Bearer {ADMIN_TOKEN}"}, chunks)
    assert status == 413 and "larger" in body["error"]["message"]
    assert read <= LIMIT // 4097 + 2  # stopped reading at the limit, not at the end


async def test_a_body_under_the_limit_is_served(door):
    r = await door.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": "a" * (LIMIT // 2)})
    assert r.status_code == 200


# --- bounded lists: a request that can never fit is a 4xx that says why, never a 429


async def test_ten_thousand_prompts_are_a_413_that_says_why(door):
    r = await door.client.post("/v1/openai/completions", json={"model": "tiny", "prompt": ["hi"] * 10_000})
    assert r.status_code == 413 and "at most 2048" in r.json()["error"]["message"]
    r = await door.client.post("/v1/openai/completions", json={"model": "tiny", "prompt": ["hi"] * 100})
    assert r.status_code == 413 and "can never be served at once" in r.json()["error"]["message"]


async def test_too_many_messages_and_tools_are_refused(door):
    r = await door.client.post(CHAT, json={"model": "tiny", "messages": HI * 3000})
    assert r.status_code == 413 and "3000 messages" in r.json()["error"]["message"]
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}} for i in range(200)]
    r = await door.client.post(CHAT, json={"model": "tiny", "messages": HI, "tools": tools})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"


# --- templates: data only, off the loop, bounded


BOMB = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"


@pytest.mark.parametrize("kwargs, word", [
    ({"chat_template": BOMB}, "chat_template"),
    ({"tokenize": True}, "tokenize"),
    ({"return_dict": True}, "return_dict"),
    ({"enable_thinking": "{{ 7*7 }}"}, "bool"),
])
async def test_template_kwargs_outside_the_allow_list_are_400(door, kwargs, word):
    started = time.perf_counter()
    r = await door.client.post(CHAT, json={"model": "tiny", "messages": HI, "max_tokens": 2,
                                           "chat_template_kwargs": kwargs})
    assert r.status_code == 400 and word in r.json()["error"]["message"], r.text
    assert r.json()["error"]["param"] == "chat_template_kwargs"
    assert time.perf_counter() - started < 2


async def test_template_data_kwargs_are_honoured(door):
    for kwargs in ({"add_generation_prompt": False}, {"enable_thinking": False}, {"documents": [{"text": "x"}]}):
        r = await door.client.post(CHAT, json={"model": "tiny", "messages": HI, "max_tokens": 2,
                                               "chat_template_kwargs": kwargs})
        assert r.status_code == 200, (kwargs, r.text)
    on = await door.client.post("/v1/openai/chat/completions", json={
        "model": "tiny", "messages": HI, "max_tokens": 1, "chat_template_kwargs": {"add_generation_prompt": True}})
    off = await door.client.post("/v1/openai/chat/completions", json={
        "model": "tiny", "messages": HI, "max_tokens": 1, "chat_template_kwargs": {"add_generation_prompt": False}})
    assert on.json()["usage"]["prompt_tokens"] > off.json()["usage"]["prompt_tokens"]


async def test_a_render_past_the_bound_fails_that_request_alone(door, monkeypatch):
    engine = door.state.pool.get("tiny")
    render = type(engine).apply_chat_template

    def slow(self, messages, **kwargs):
        if messages[-1]["content"] == "slow":
            time.sleep(1.5)
        return render(self, messages, **kwargs)

    monkeypatch.setattr(type(engine), "apply_chat_template", slow)
    slow_call = asyncio.create_task(door.client.post(CHAT, json={
        "model": "tiny", "messages": [{"role": "user", "content": "slow"}], "max_tokens": 2}))
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    health = await door.client.get("/livez")  # the loop is free while the template renders
    assert health.status_code == 200 and time.perf_counter() - started < 0.5
    fast = await door.client.post(CHAT, json={"model": "tiny", "messages": HI, "max_tokens": 2})
    assert fast.status_code == 200
    r = await slow_call
    assert r.status_code == 400 and "took longer than 1 s" in r.json()["error"]["message"]


async def test_a_prompt_too_long_for_the_context_is_refused_before_it_is_rendered_or_tokenised(door, monkeypatch):
    engine = door.state.pool.get("tiny")  # context 256: at most 256 x 256 characters can ever fit
    worked = []
    render, encode = type(engine).apply_chat_template, type(engine).encode
    monkeypatch.setattr(type(engine), "apply_chat_template",
                        lambda self, *a, **k: worked.append("render") or render(self, *a, **k))
    monkeypatch.setattr(type(engine), "encode", lambda self, *a, **k: worked.append("encode") or encode(self, *a, **k))
    long = "x" * (256 * 256 + 1)
    parts = [{"role": "user", "content": [{"type": "text", "text": "y" * 33000}, {"type": "text", "text": "z" * 33000}]}]
    for path, body in [
        (CHAT, {"model": "tiny", "messages": [{"role": "user", "content": long}]}),
        (CHAT, {"model": "tiny", "messages": parts}),  # counted across parts
        ("/v1/openai/completions", {"model": "tiny", "prompt": ["hi", long]}),
        ("/v1/inference/tiny", {"input": long}),
    ]:
        r = await door.client.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert "characters" in r.text and "context of 256 tokens" in r.text, r.text
    assert worked == []  # none of it reached the template or the tokenizer
    # under the bound, the tokens decide, as before
    r = await door.client.post(CHAT, json={"model": "tiny", "messages": [{"role": "user", "content": "x " * 3000}]})
    assert r.status_code == 400 and "tokens" in r.json()["error"]["message"]
    assert worked


# --- values the engines cannot take are 400s, not 500s


@pytest.mark.parametrize("path, body", [
    (CHAT, {"model": "tiny", "messages": HI, "stop": [""]}),
    (CHAT, {"model": "tiny", "messages": HI, "stop": ""}),
    ("/v1/openai/completions", {"model": "tiny", "prompt": "hi", "stop": ["", "x"]}),
    ("/v1/inference/tiny", {"input": "hi", "stop": [""]}),
    ("/anthropic/v1/messages", {"model": "tiny", "max_tokens": 4, "messages": HI, "stop_sequences": [""]}),
    (CHAT, {"model": "tiny", "messages": HI, "seed": 2**70}),
    ("/embeddings", {"model": MINILM, "input": [2**80, -5], "encoding_format": "\U000d92f9"}),  # found by fuzzing
    ("/v1/inference/tiny", {"input": 2**80}),
    ("/v1/inference/tiny", {"input": "hi", "seed": -(2**70)}),
    (CHAT, {"model": "tiny", "messages": HI, "logit_bias": {"999999999": 5}}),
    (CHAT, {"model": "tiny", "messages": HI, "logit_bias": {"12": 500}}),
    (CHAT, {"model": "tiny", "messages": [{"role": "assistant", "content": "x"}],
            "chat_template_kwargs": {"continue_final_message": True, "add_generation_prompt": True}}),
])
async def test_bad_values_are_400_in_the_dialects_shape(door, path, body):
    r = await door.client.post(path, json={**body, "max_tokens": 2} if "max_tokens" not in body else body)
    assert r.status_code in (400, 422), r.text
    assert "x-request-id" in r.headers


async def test_seeds_anywhere_in_64_bits_are_served_and_repeat(door):
    for seed in (2**63 + 5, -(2**63), 2**64 - 1, -1):
        a, b = [(await door.client.post(CHAT, json={"model": "tiny", "messages": HI, "max_tokens": 6,
                                                    "seed": seed})).json() for _ in range(2)]
        assert a["choices"][0]["message"] == b["choices"][0]["message"], seed


async def test_logit_bias_is_honoured(door):
    engine = door.state.pool.get("tiny")
    token = engine.encode(" Paris", special=False)[0]
    r = await door.client.post(CHAT, json={"model": "tiny", "messages": HI, "max_tokens": 5, "temperature": 0,
                                           "logit_bias": {str(token): 100}})
    body = r.json()
    assert r.status_code == 200 and body["choices"][0]["message"]["content"] == " Paris" * 5


async def test_an_unexpected_error_is_a_500_with_the_request_id_and_the_dialect_shape(door, monkeypatch):
    async def boom(*args, **kwargs):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(door.state.embeddings, "embed", boom)
    # the ASGI transport raises whatever the app re-raises: a response here means the error
    # was answered inside the app, and the server keeps the connection open
    r = await door.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": "x"},
                               headers={"X-Request-ID": "mine"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "mine"
    assert r.json()["error"]["code"] == "internal_error" and "request id" in r.json()["error"]["message"]
    r = await door.client.post("/v1/inference/" + MINILM, json={"inputs": ["x"]})
    assert r.status_code == 500 and isinstance(r.json()["error"], str)


# --- request identity


async def test_duplicate_client_request_ids_under_concurrency_both_complete(door):
    body = {"model": "tiny", "messages": HI, "max_tokens": 40, "ignore_eos": True, "stream": True}
    headers = {"X-Request-ID": "retry-1"}

    async def stream():
        async with door.client.stream("POST", CHAT, json=body, headers=headers) as r:
            assert r.headers["x-request-id"] == "retry-1"
            return [json.loads(line[6:]) async for line in r.aiter_lines() if line.startswith("data: {")]

    for chunks in await asyncio.gather(stream(), stream()):
        assert chunks[-1]["usage"]["completion_tokens"] == 40
        assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] == "length"
    await door.state.usage.flush()
    async with door.state.db.sessions() as session:
        rows = (await session.scalars(select(UsageRecord).where(UsageRecord.client_request_id == "retry-1"))).all()
    assert [r.status for r in rows] == ["succeeded", "succeeded"] and len({r.request_id for r in rows}) == 2


# --- system routes


async def test_metrics_behind_the_setting_answer_admins_only(door):
    secret, _ = await door.state.tokens.create("user")
    r = await door.client.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 403
    assert (await door.client.get("/metrics", headers={"Authorization": ""})).status_code == 401
    assert (await door.client.get("/metrics")).status_code == 200


async def test_liveness_and_readiness(door):
    assert (await door.client.get("/livez")).json() == {"status": "alive"}
    r = await door.client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_every_route_that_needs_a_token_refuses_a_missing_wrong_or_revoked_one(door):
    from inferd.api.routing import DialectRoute

    secret, row = await door.state.tokens.create("soon-revoked")
    await door.state.tokens.revoke(row.token_id)
    routes = [r for r in door.app.routes if isinstance(r, DialectRoute)]
    guarded = [r for r in routes if r.needs_token]
    assert len(guarded) >= 15 and all(r.path in ("/health",) for r in routes if not r.needs_token)
    for route in guarded:
        path = route.path.replace("{model:path}", "tiny")
        for method in route.methods:
            for header in ("", "Bearer", "Bearer inferd_wrong", f"Bearer {secret}", "Basic abc"):
                r = await door.client.request(method, path, headers={"Authorization": header},
                                              json={"model": "tiny"})
                assert r.status_code == 401, (method, path, header, r.status_code)
