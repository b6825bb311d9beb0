"""`inferd serve --ray` with INFERD_RAY_INGRESS=serve: the FastAPI app as a Ray Serve ingress
deployment behind Serve's own HTTP proxy, the model in its replica; the same answers, tokens
and error shapes as from one process."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import RemoteServer, default_models, write_catalog
from tests.e2e.test_ray import MINILM, replicas, wait_for

pytest.importorskip("ray.serve")


def test_the_serve_ingress_answers_as_one_process(tmp_path):
    import openai

    catalog = write_catalog(tmp_path / "catalog.yaml", default_models("embeddings")[:1])
    server = RemoteServer(tmp_path, "--ray", "--catalog", str(catalog),
                          env={"INFERD_RAY_DASHBOARD": "false", "INFERD_RAY_INGRESS": "serve"})
    try:
        server.wait_ready(timeout=300)
        assert len(replicas(MINILM)) == 1
        client = openai.OpenAI(base_url=f"{server.base_url}/v1/openai", api_key=server.token)
        vectors = np.array([d.embedding for d in client.embeddings.create(
            model=MINILM, input=["Paris is in France.", "Paris is a French city.", "Bananas are yellow."]).data])
        assert vectors.shape == (3, 384) and vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
        url = f"{server.base_url}/v1/openai/embeddings"
        assert httpx.post(url, json={"model": MINILM, "input": "x"}).status_code == 401
        bad = httpx.post(url, json={"model": MINILM, "input": [""]}, headers=server.headers())
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    finally:
        assert server.stop(timeout=60) == 0
    wait_for(lambda: not replicas(MINILM), 30, "the replicas end with the server")
