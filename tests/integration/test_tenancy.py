"""Accounts and API tokens over HTTP (in process, on the shipped MiniLM): who sees and changes
what, the token rules (expiry, allowed networks, a disabled account), and bad input."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import select

from inferd.accounts.models import UsageRecord
from inferd.catalog import load_catalog
from inferd.catalog.catalog import Catalog
from tests.conftest import MINILM, client_for, make_settings, start_app

EMBED = {"model": MINILM, "input": "hello"}


@pytest.fixture(scope="module")
async def app(tmp_path_factory):
    catalog = Catalog([spec for spec in load_catalog() if spec.id == MINILM])
    async for h in start_app(make_settings(tmp_path_factory.mktemp("tenancy")), catalog):
        yield h



async def new_account(app, name: str, **limits) -> dict:
    r = await app.client.post("/v1/accounts", json={"name": name, **limits})
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_new_account_calls_models_and_is_billed_as_itself(app):
    made = await new_account(app, "team-a")
    assert made["token"].startswith("inferd_") and made["account_id"].startswith("acc_")
    assert made["is_admin"] is False and made["disabled"] is False and made["active_tokens"] == 1
    async with client_for(app, made["token"]) as user:
        me = (await user.get("/v1/me")).json()
        assert me["uid"] == me["account_id"] == made["account_id"] and me["is_admin"] is False
        assert me["token_id"] == made["token_id"] and me["rate_limit"] == 200
        r = await user.post("/v1/openai/embeddings", json=EMBED)
        assert r.status_code == 200
    await app.state.usage.flush()
    async with app.state.db.sessions() as session:
        row = await session.scalar(select(UsageRecord).where(UsageRecord.request_id == r.headers["x-request-id"]))
    assert row.account_id == made["account_id"] and row.token_id == made["token_id"]
    admin_me = (await app.client.get("/v1/me")).json()
    assert admin_me["is_admin"] is True and admin_me["account_id"] == "acc_admin"


async def test_a_token_manages_its_own_accounts_tokens_and_nothing_else(app):
    a, b = await new_account(app, "team-a2"), await new_account(app, "team-b2")
    async with client_for(app, a["token"]) as alice, client_for(app, b["token"]) as bob:
        made = await alice.post("/v1/api-tokens", json={"name": "ci"})
        assert made.status_code == 200
        ci = made.json()
        assert ci["token"].startswith("inferd_") and ci["name"] == "ci" and abs(ci["created_at"] - time.time()) < 60
        assert (await alice.post("/v1/api-tokens", json={"name": "ci"})).status_code == 409  # same name
        listed = (await alice.get("/v1/api-tokens")).json()
        assert {t["token_id"] for t in listed} == {a["token_id"], ci["token_id"]}
        assert all(t["token"].startswith("inferd_…") and len(t["token"]) < 16 for t in listed)  # never again whole
        by_id = (await alice.get(f"/v1/api-tokens/{ci['token_id']}")).json()
        by_secret = (await alice.get(f"/v1/api-tokens/{ci['token']}")).json()
        assert by_id["token_id"] == by_secret["token_id"] == ci["token_id"] and by_secret["token"] == ci["token"]
        # bob: not alice's tokens, not with her account id, not the accounts
        assert (await bob.get(f"/v1/api-tokens/{ci['token_id']}")).status_code == 403
        assert (await bob.delete(f"/v1/api-tokens/{ci['token_id']}")).status_code == 403
        assert (await bob.get("/v1/api-tokens", params={"account_id": a["account_id"]})).status_code == 403
        assert (await bob.post("/v1/api-tokens", params={"account_id": a["account_id"]},
                               json={"name": "x"})).status_code == 403
        for method, path in (("GET", "/v1/accounts"), ("POST", "/v1/accounts"), ("GET", f"/v1/accounts/{a['account_id']}"),
                             ("PATCH", f"/v1/accounts/{b['account_id']}"), ("DELETE", f"/v1/accounts/{a['account_id']}")):
            r = await bob.request(method, path, json={"name": "x"} if method in ("POST", "PATCH") else None)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json() == {"error": "This route needs an admin token"}
        # revoking: refused at once
        async with client_for(app, ci["token"]) as ci_client:
            assert (await ci_client.post("/v1/openai/embeddings", json=EMBED)).status_code == 200
            assert (await alice.delete(f"/v1/api-tokens/{ci['token_id']}")).status_code == 200
            assert (await ci_client.post("/v1/openai/embeddings", json=EMBED)).status_code == 401
        assert (await alice.get(f"/v1/api-tokens/{ci['token_id']}")).status_code == 404
    # the admin acts on any account
    r = await app.client.get("/v1/api-tokens", params={"account_id": b["account_id"]})
    assert [t["token_id"] for t in r.json()] == [b["token_id"]]
    r = await app.client.post("/v1/api-tokens", params={"account_id": "acc_nobody"}, json={"name": "x"})
    assert r.status_code == 404


async def test_the_admin_disables_and_limits_accounts(app):
    made = await new_account(app, "team-c", rate_limit=7)
    async with client_for(app, made["token"]) as user:
        assert (await user.get("/v1/me/rate_limit")).json() == {"rate_limit": 7, "tpm_rate_limit": None}
        r = await app.client.patch(f"/v1/accounts/{made['account_id']}", json={"tpm_rate_limit": 5000,
                                                                                "spending_limit": 12.5})
        assert r.status_code == 200 and r.json()["tpm_rate_limit"] == 5000 and r.json()["spending_limit"] == 12.5
        assert r.json()["rate_limit"] == 7  # not sent: unchanged
        assert (await user.get("/v1/me/rate_limit")).json() == {"rate_limit": 7, "tpm_rate_limit": 5000}
        r = await app.client.delete(f"/v1/accounts/{made['account_id']}")
        assert r.status_code == 200 and r.json()["disabled"] is True
        refused = await user.post("/v1/openai/embeddings", json=EMBED)
        assert refused.status_code == 403 and "disabled" in refused.json()["error"]["message"]
        await app.client.patch(f"/v1/accounts/{made['account_id']}", json={"disabled": False, "rate_limit": None})
        assert (await user.post("/v1/openai/embeddings", json=EMBED)).status_code == 200
        assert (await user.get("/v1/me/rate_limit")).json()["rate_limit"] == 200  # cleared: the default
    listed = {a["account_id"]: a for a in (await app.client.get("/v1/accounts")).json()}
    assert listed["acc_admin"]["is_admin"] and listed[made["account_id"]]["active_tokens"] == 1
    r = await app.client.delete("/v1/accounts/acc_admin")
    assert r.status_code == 409
    assert (await app.client.get("/v1/accounts/acc_nobody")).status_code == 404


async def test_expired_tokens_and_tokens_from_elsewhere_are_refused(app):
    r = await app.client.post("/v1/api-tokens", json={"name": "brief", "expires_delta": 1})
    brief = r.json()
    assert brief["expires_at"] - brief["created_at"] in (1, 2)
    fenced = (await app.client.post("/v1/api-tokens", json={"name": "fenced", "allowed_ips": ["10.0.0.0/8"]})).json()
    local = (await app.client.post("/v1/api-tokens", json={"name": "local",
                                                           "allowed_ips": ["127.0.0.0/8", "::1"]})).json()
    assert local["allowed_ips"] == ["127.0.0.0/8", "::1/128"]
    async with client_for(app, fenced["token"]) as client:
        r = await client.post("/v1/openai/embeddings", json=EMBED)
        assert r.status_code == 403 and "allowed_ips" in r.json()["error"]["message"]
    async with client_for(app, local["token"]) as client:  # the in-process client is 127.0.0.1
        assert (await client.post("/v1/openai/embeddings", json=EMBED)).status_code == 200
    await asyncio.sleep(1.1)
    async with client_for(app, brief["token"]) as client:
        r = await client.post("/v1/openai/embeddings", json=EMBED)
        assert r.status_code == 401 and r.json()["error"]["message"] == "This API token has expired"


@pytest.mark.parametrize(("body", "status"), [
    ({}, 422),
    ({"name": ""}, 422),
    ({"name": "x" * 201}, 422),
    ({"name": "x", "allowed_ips": ["10.0.0.0/33"]}, 400),
    ({"name": "x", "allowed_ips": ["nope"]}, 400),
    ({"name": "x", "allowed_ips": ["10.0.0.1"] * 65}, 422),
    ({"name": "x", "expires_delta": 10, "expires_at": 2_000_000_000}, 400),
    ({"name": "x", "expires_at": 1}, 400),
    ({"name": "x", "expires_delta": -5}, 422),
    ({"name": "x", "rate_limit": 0}, 422),
    ({"name": "x", "is_admin": True}, 422),  # unknown fields are refused, not ignored
    ({"name": "x", "allowed_ip": ["10.0.0.0/8"]}, 422),
    ({"name": ["x"]}, 422),
])
async def test_bad_token_requests_are_4xx_in_deepinfras_shape(app, body, status):
    r = await app.client.post("/v1/api-tokens", json=body)
    assert r.status_code == status, r.text
    assert ("detail" if status == 422 else "error") in r.json()


async def test_hostile_paths_and_bodies(app):
    assert (await app.client.get("/v1/api-tokens/" + "a" * 5000)).status_code == 404
    assert (await app.client.get("/v1/api-tokens/inferd_" + "a" * 600)).status_code == 404
    assert (await app.client.get("/v1/api-tokens/%00")).status_code == 404
    assert (await app.client.get("/v1/accounts/" + "a" * 5000)).status_code == 404
    r = await app.client.post("/v1/accounts", json={"name": "x", "spending_limit": -1})
    assert r.status_code == 422
    r = await app.client.post("/v1/accounts", json={"name": "x", "spending_limit": "1e400"})
    assert r.status_code == 422
    r = await app.client.patch("/v1/accounts/acc_admin", json={"name": None})
    assert r.status_code == 400
    r = await app.client.get("/v1/api-tokens", params={"account_id": "a" * 100})
    assert r.status_code == 422
    async with client_for(app, "inferd_forged") as forged:
        assert (await forged.get("/v1/me")).status_code == 401
    async with httpx.AsyncClient(transport=app.client._transport, base_url="http://inferd.test") as anonymous:
        assert (await anonymous.post("/v1/api-tokens", json={"name": "x"})).status_code == 401
        assert (await anonymous.get("/v1/accounts")).status_code == 401


async def test_costs_and_the_months_bill_add_up_exactly(app):
    made = await new_account(app, "billed")
    reported, ids = [], []
    async with client_for(app, made["token"]) as user:
        for i in range(6):
            text = "the quick brown fox " * (i + 1)
            if i % 2:
                r = await user.post(f"/v1/inference/{MINILM}", json={"inputs": [text, "x"]})
                cost = r.json()["inference_status"]["cost"]
                ids.append(r.json()["request_id"])
            else:
                r = await user.post("/v1/openai/embeddings", json={"model": MINILM, "input": text},
                                    headers={"X-Request-ID": f"mine-{i}"} if i == 4 else {})
                cost = r.json()["usage"]["estimated_cost"]
                ids.append(r.headers["x-request-id"])
            assert r.status_code == 200
            reported.append(round(cost * 10**9))
        assert all(nano > 0 for nano in reported) and "mine-4" in ids
        r = await user.post("/v1/request-costs", json={"requestIds": [*ids, "unknown-id"]})
        assert r.status_code == 200
        costs = {c["requestId"]: c["costNanoUsd"] for c in r.json()["requests"]}
        assert costs == dict(zip(ids, reported, strict=True))  # unknown ids are left out
        bill = (await user.get("/payment/usage", params={"from": "current"})).json()
        (month,) = bill["months"]
        (item,) = month["items"]
        assert month["total_cost_nano_usd"] == item["cost_nano_usd"] == sum(reported)
        assert month["total_cost"] == round(sum(reported) / 10**7)  # to the cent
        assert item["model"]["model_name"] == MINILM and item["pricing_type"] == "input_tokens"
        assert item["requests"] == 6 and item["units"] == item["input_tokens"] > 0
        assert item["rate"] == pytest.approx(0.0000005)
        assert month["period"] == time.strftime("%Y.%m", time.gmtime()) and bill["initial_month"] == month["period"]
        by_token = (await user.get(f"/payment/usage/{made['token_id']}", params={"from": "current"})).json()
        assert by_token["months"][0]["total_cost_nano_usd"] == sum(reported)
        three = (await user.get("/payment/usage", params={"from": "current-2", "to": "current"})).json()
        assert [m["total_cost_nano_usd"] for m in three["months"]] == [0, 0, sum(reported)]
    other = await new_account(app, "nosy")
    async with client_for(app, other["token"]) as nosy:
        r = await nosy.post("/v1/request-costs", json={"requestIds": ids})
        assert r.json() == {"requests": []}  # another account's requests are not found
        assert (await nosy.get(f"/payment/usage/{made['token_id']}", params={"from": "current"})).status_code == 403
        empty = (await nosy.get("/payment/usage", params={"from": "current"})).json()
        assert empty["months"][0]["items"] == [] and empty["months"][0]["total_cost"] == 0
    admin_view = await app.client.post("/v1/request-costs", json={"requestIds": ids[:2]})
    assert len(admin_view.json()["requests"]) == 2
    r = await app.client.get("/payment/usage", params={"from": "current", "account_id": made["account_id"]})
    assert r.json()["months"][0]["total_cost_nano_usd"] == sum(reported)


@pytest.mark.parametrize(("params", "status"), [
    ({"from": "2026.13"}, 400),
    ({"from": "yesterday"}, 400),
    ({"from": "current-1", "to": "current-3"}, 400),
    ({"from": "2000.01", "to": "2026.12"}, 400),  # more than 120 months
    ({"from": "9" * 40}, 422),
    ({}, 422),
    ({"from": "1700000000"}, 200),
    ({"from": "2026.01", "to": "current"}, 200),
])
async def test_bill_periods(app, params, status):
    r = await app.client.get("/payment/usage", params=params)
    assert r.status_code == status, r.text
    assert ("error" if status == 400 else "detail" if status == 422 else "months") in r.json()


async def test_request_cost_requests_are_bounded(app):
    assert (await app.client.post("/v1/request-costs", json={"requestIds": ["x"] * 1001})).status_code == 422
    assert (await app.client.post("/v1/request-costs", json={"requestIds": ["x" * 129]})).status_code == 422
    assert (await app.client.post("/v1/request-costs", json={"requestIds": "x"})).status_code == 422
    r = await app.client.post("/v1/request-costs", json={"requestIds": []})
    assert r.status_code == 200 and r.json() == {"requests": []}
