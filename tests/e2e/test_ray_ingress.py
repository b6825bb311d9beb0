"""`inferd serve --ray` with INFERD_RAY_INGRESS=serve: the FastAPI app as a Ray Serve ingress
deployment, two replicas of it behind Serve's own HTTP proxy on one PostgreSQL, the model in its
replica (called as Ray tasks, not over gRPC); the same answers, tokens and error shapes as from one
process, and an account's limit and bill exact whichever ingress replica takes a request."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from inferd.accounts.db import Database
from inferd.accounts.models import UsageRecord
from inferd.catalog.sources import resolve_source
from tests.e2e.conftest import RemoteServer, default_models, write_catalog
from tests.e2e.test_ray import MINILM, _burst, replicas, serve_replicas, wait_for

pytest.importorskip("ray.serve")


def ingress_replicas() -> list:
    return serve_replicas("ray::ServeReplica:inferd:ingress")


async def usage_rows(url: str, account_id: str) -> int:
    db = Database(url)
    try:
        async with db.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(UsageRecord)
                                            .where(UsageRecord.account_id == account_id)))
    finally:
        await db.close()


async def test_two_serve_ingress_replicas_answer_as_one_process_and_share_limits(tmp_path, pg_server):
    """... and a user's deployment gets replicas of its own, deployed by the ingress replica that
    made it and attached to by the other (not deployed twice: that would restart its replicas)."""
    import openai

    url = await pg_server.new_database()
    minilm = default_models("embeddings")[0]
    catalog = write_catalog(tmp_path / "catalog.yaml", [minilm])
    minilm_dir = resolve_source(minilm["source"])
    server = RemoteServer(tmp_path, "--ray", "--catalog", str(catalog), "--database-url", url,
                          env={"INFERD_RAY_DASHBOARD": "false", "INFERD_RAY_INGRESS": "serve",
                               "INFERD_RAY_INGRESS_REPLICAS": "2", "INFERD_USAGE_FLUSH_INTERVAL_S": "0.1",
                               # the ingress calls its model as Ray tasks (test_ray.py: over gRPC, the default)
                               "INFERD_RAY_DIRECT_CALLS": "false",
                               "INFERD_DEPLOY_PATHS": json.dumps([str(minilm_dir)]), "INFERD_DEPLOY_SYNC_S": "1"})
    try:
        await asyncio.to_thread(server.wait_ready, timeout=300)
        assert len(replicas(MINILM)) == 1 and len(ingress_replicas()) == 2
        client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1/openai", api_key=server.token)
        vectors = np.array([d.embedding for d in (await client.embeddings.create(
            model=MINILM, input=["Paris is in France.", "Paris is a French city.", "Bananas are yellow."])).data])
        assert vectors.shape == (3, 384) and vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            endpoint = "/v1/openai/embeddings"
            assert (await http.post(endpoint, json={"model": MINILM, "input": "x"})).status_code == 401
            bad = await http.post(endpoint, json={"model": MINILM, "input": [""]}, headers=server.headers())
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
            made = (await http.post("/v1/accounts", json={"name": "ten", "rate_limit": 10},
                                    headers=server.headers())).json()
        # 30 requests of 128 long inputs at once over the two ingress replicas (Serve's proxy spreads
        # them): the ten admitted take seconds, so they still hold their slots when the rest arrive
        statuses = await _burst(server, MINILM, 30, token=made["token"], inputs=128)
        assert statuses.count(200) == 10 and statuses.count(429) == 20, statuses
        # and the bill has a row for each request served, none twice
        for _ in range(50):
            if await usage_rows(url, made["account_id"]) >= 10:
                break
            await asyncio.sleep(0.2)
        assert await usage_rows(url, made["account_id"]) == 10

        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers(), timeout=60) as http:
            r = await http.post("/deploy/hf/", json={"model_name": "team/minilm", "task": "embeddings",
                                                     "path": str(minilm_dir)})
            assert r.status_code == 200, r.text
            deploy_id = r.json()["deploy_id"]
            deadline = time.monotonic() + 300
            # (each ingress replica answers from its own rows: 404 from one that has not followed
            # yet; both say deployed once both have)
            pids = set()  # every replica process of the deployment seen from here on
            while {(await http.get(f"/deploy/{deploy_id}")).json().get("status") for _ in range(6)} != {"deployed"}:
                pids |= {p.pid for p in replicas("team/minilm")}
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            for _ in range(15):  # a few rounds more of the ingress replicas following each other
                pids |= {p.pid for p in replicas("team/minilm")}
                await asyncio.sleep(0.2)
            # one replica of its own (not an engine in each ingress), never restarted: the other
            # ingress replica attached to it (deploying it again gives it a new version, and
            # Serve's controller says so as it replaces the replica)
            assert len(replicas("team/minilm")) == 1 and len(pids) == 1, pids
            deploys = re.findall(r"Deploying new version of Deployment\(name='model-team_minilm", server.log())
            assert len(deploys) == 1, deploys
            answers = await asyncio.gather(*(http.post("/v1/openai/embeddings", json={
                "model": "team/minilm", "input": "Paris is in France."}) for _ in range(20)))
            assert [a.status_code for a in answers] == [200] * 20
            got = np.array(answers[0].json()["data"][0]["embedding"])
            assert abs(got @ vectors[0] - 1) < 1e-4  # the catalog's MiniLM, from the deployment's replica
            assert (await http.delete(f"/deploy/{deploy_id}")).status_code == 200
            wait_for(lambda: not replicas("team/minilm"), 60, "the deployment's replicas end with it")
    finally:
        assert await asyncio.to_thread(server.stop, timeout=60) == 0
    wait_for(lambda: not replicas(MINILM) and not ingress_replicas(), 30, "the replicas end with the server")
