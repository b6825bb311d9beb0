"""Scoped tokens (`POST/GET /v1/scoped-jwt`) and spending limits, in process: the shipped MiniLM
and a tiny random-weight LM (so a stream runs as long as it is let), both priced."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from sqlalchemy import func, select

from inferd.accounts.models import UsageRecord
from inferd.catalog import load_catalog
from inferd.catalog.catalog import Catalog
from inferd.catalog.spec import ModelSpec
from tests.conftest import MINILM, client_for, make_settings, start_app

EMBED = {"model": MINILM, "input": "hello"}
LM_PRICING = {"type": "tokens", "cents_per_input_token": 0.000001, "cents_per_output_token": 0.0001}
STEP_NANO = 1000  # one output token: 0.0001 cents


@pytest.fixture(scope="module")
async def app(tmp_path_factory, tiny_lm_dir):
    minilm = next(spec for spec in load_catalog() if spec.id == MINILM)
    lm = ModelSpec(id="tiny", task="text-generation", backend="transformers", source=str(tiny_lm_dir),
                   pricing=LM_PRICING, limits={"context_length": 512})
    async for h in start_app(make_settings(tmp_path_factory.mktemp("scoped"), token_cache_ttl_s=60),
                             Catalog([minilm, lm])):
        yield h



async def account(app, name: str, **fields) -> dict:
    r = await app.client.post("/v1/accounts", json={"name": name, **fields})
    assert r.status_code == 200, r.text
    return r.json()


async def scoped(client, **body) -> str:
    r = await client.post("/v1/scoped-jwt", json={"api_key_name": "default", **body})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert token.startswith("jwt:")
    return token


async def spent_by(app, scope_token: str) -> int:
    claims = jwt.decode(scope_token[4:], options={"verify_signature": False})
    await app.state.usage.flush()
    async with app.state.db.sessions() as session:
        return int(await session.scalar(select(func.coalesce(func.sum(UsageRecord.cost_nano_usd), 0))
                                        .where(UsageRecord.scope_id == claims["jti"])))


async def stream_chat(client, max_tokens: int) -> tuple[int, list]:
    events = []
    async with client.stream("POST", "/v1/openai/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "stream": True, "temperature": 0}) as r:
        if r.status_code != 200:
            return r.status_code, [json.loads(await r.aread())]
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return 200, events


async def test_a_scoped_token_calls_only_its_models_and_manages_nothing(app):
    made = await account(app, "scoped-a")
    async with client_for(app, made["token"]) as owner:
        token = await scoped(owner, models=["default"], expires_delta=3600)  # an alias: the catalog's id is kept
        async with client_for(app, token) as narrow:
            r = await narrow.post("/v1/openai/embeddings", json=EMBED)
            assert r.status_code == 200
            r = await narrow.post("/v1/openai/chat/completions", json={
                "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
            assert r.status_code == 403 and "tiny" in r.json()["error"]["message"]
            me = (await narrow.get("/v1/me")).json()
            assert me["account_id"] == made["account_id"]
            for method, path in (("GET", "/v1/api-tokens"), ("POST", "/v1/scoped-jwt"),
                                 ("POST", "/v1/request-costs"), ("GET", "/payment/usage?from=current"),
                                 ("GET", f"/v1/api-tokens/{made['token_id']}")):
                body = {"requestIds": []} if "costs" in path else {"api_key_name": "default"}
                r = await narrow.request(method, path, json=body if method == "POST" else None)
                assert r.status_code == 403, (path, r.text)
        info = (await owner.get("/v1/scoped-jwt", params={"jwtoken": token})).json()
        assert info["models"] == [MINILM] and info["api_key_name"] == "default"
        assert abs(info["expires_at"] - (time.time() + 3600)) < 60 and info["spending_limit"] is None
        assert round(info["spent"] * 10**9) == await spent_by(app, token) > 0
    other = await account(app, "scoped-b")
    async with client_for(app, other["token"]) as stranger:
        assert (await stranger.get("/v1/scoped-jwt", params={"jwtoken": token})).status_code == 403


async def test_expiry_revocation_and_forgeries_are_refused(app):
    made = await account(app, "scoped-c")
    async with client_for(app, made["token"]) as owner:
        brief = await scoped(owner, expires_delta=1)
        lasting = await scoped(owner)
        # the api_token_name spelling (DeepInfra's OpenAPI description) works too
        r = await owner.post("/v1/scoped-jwt", json={"api_token_name": "default", "models": [MINILM]})
        assert r.status_code == 200
        async with client_for(app, lasting) as client:
            assert (await client.post("/v1/openai/embeddings", json=EMBED)).status_code == 200
        header, payload, signature = lasting[4:].split(".")
        claims = jwt.decode(lasting[4:], options={"verify_signature": False})
        forgeries = [
            f"jwt:{header}.{payload}.{signature[:-2]}AA",  # a changed signature
            "jwt:" + jwt.encode({**claims, "models": None}, "guessed-secret-guessed-secret-guessed!",
                                algorithm="HS256", headers=jwt.get_unverified_header(lasting[4:])),
            "jwt:" + jwt.encode(claims, None, algorithm="none"),
            "jwt:" + jwt.encode({**claims, "acc": "acc_admin"}, "x" * 32, algorithm="HS256",
                                headers={"kid": "nope"}),
            "jwt:not-a-jwt", "jwt:", "jwt:" + "a" * 20000,
        ]
        for forged in forgeries:
            async with client_for(app, forged) as client:
                r = await client.post("/v1/openai/embeddings", json=EMBED)
                assert r.status_code == 401, (forged[:60], r.text)
        await asyncio.sleep(1.1)
        async with client_for(app, brief) as client:
            r = await client.post("/v1/openai/embeddings", json=EMBED)
            assert r.status_code == 401 and r.json()["error"]["message"] == "This scoped token has expired"
        assert (await owner.delete(f"/v1/api-tokens/{made['token_id']}")).status_code == 200  # the parent
    async with client_for(app, lasting) as client:  # ends with it, at once (the token cache is 60 s here)
        assert (await client.post("/v1/openai/embeddings", json=EMBED)).status_code == 401


@pytest.mark.parametrize(("body", "status"), [
    ({"api_key_name": "nobody"}, 404),
    ({"api_key_name": "admin", "models": ["org/absent"]}, 404),
    ({"api_key_name": "admin", "models": ["x"] * 101}, 422),
    ({"api_key_name": "admin", "expires_delta": 0}, 422),
    ({"api_key_name": "admin", "expires_at": 5}, 400),
    ({"api_key_name": "admin", "spending_limit": -1}, 422),
    ({"api_key_name": "admin", "spending_limit": 0.0000000001}, 422),
    ({"api_key_name": "admin", "scopes": ["all"]}, 422),
    ({}, 422),
])
async def test_bad_scoped_token_requests(app, body, status):
    r = await app.client.post("/v1/scoped-jwt", json=body)
    assert r.status_code == status, r.text


async def test_inspecting_something_else(app):
    for value in ("inferd_abc", "jwt:abc", "jwt:" + "a" * 17000):
        r = await app.client.get("/v1/scoped-jwt", params={"jwtoken": value})
        assert r.status_code in (400, 422), r.text


async def test_a_spending_limit_stops_a_stream_and_then_refuses(app):
    made = await account(app, "scoped-d")
    async with client_for(app, made["token"]) as owner:
        limit_nano = 5_500  # the prompt (~tens of nano-dollars) and about five output tokens
        token = await scoped(owner, spending_limit=limit_nano / 10**9)
        async with client_for(app, token) as client:
            status, events = await stream_chat(client, max_tokens=40)
            assert status == 200
            error = events[-1]["error"]
            assert error["code"] == "spending_limit_reached" and "scoped token" in error["message"]
            produced = sum(1 for e in events if e.get("choices") and e["choices"][0]["delta"].get("content"))
            assert 1 <= produced < 40
            spent = await spent_by(app, token)
            assert limit_nano <= spent < limit_nano + STEP_NANO  # at most the step that reached it
            status, body = await stream_chat(client, max_tokens=5)
            assert status == 402 and body[0]["error"]["code"] == "spending_limit_reached"
            assert (await client.post("/v1/openai/embeddings", json=EMBED)).status_code == 402
        async with client_for(app, made["token"]) as still:  # the parent token has no limit of its own
            assert (await still.post("/v1/openai/embeddings", json=EMBED)).status_code == 200


async def test_an_accounts_monthly_limit(app):
    made = await account(app, "limited", spending_limit=0.000003)  # 3000 nano-dollars
    async with client_for(app, made["token"]) as client:
        status, events = await stream_chat(client, max_tokens=40)
        assert status == 200 and "month" in events[-1]["error"]["message"]
        bill = (await client.get("/payment/usage", params={"from": "current"})).json()
        assert 3000 <= bill["months"][0]["total_cost_nano_usd"] < 3000 + STEP_NANO
        r = await client.post("/v1/openai/embeddings", json=EMBED)
        assert r.status_code == 402 and "month" in r.json()["error"]["message"]
        await app.client.patch(f"/v1/accounts/{made['account_id']}", json={"spending_limit": None})
        assert (await client.post("/v1/openai/embeddings", json=EMBED)).status_code == 200
