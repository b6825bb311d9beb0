"""`inferd serve --ray` with models at zero replicas: one that scales to zero when idle and
back for a request, and one whose replica cannot be placed when the server starts (it asks for
more CPUs than the local Ray has) — 503 with Retry-After until a node with room joins the
cluster, then it serves. Real clients, a local Ray on 127.0.0.1, a second Ray node started by
`ray start` on the same machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RemoteServer, default_models, write_catalog
from tests.e2e.test_ray import replicas, wait_for

pytest.importorskip("ray.serve")

ZERO = "inferd/minilm-zero"  # 0 replicas while idle
ROOMLESS = "inferd/minilm-roomless"  # a replica wants ROOM CPUs: more than the local Ray has (os.cpu_count())
ROOM = (os.cpu_count() or 2) + 2
RAY = str(Path(sys.executable).with_name("ray"))


LATEST = Path("/tmp/ray/ray_current_cluster")  # the cluster `ray start` made last on this machine


def _put_back(recorded: str | None) -> None:
    if recorded is None:
        LATEST.unlink(missing_ok=True)
    else:
        LATEST.write_text(recorded)


def health(server: RemoteServer) -> dict[str, dict]:
    return httpx.get(f"{server.base_url}/health", timeout=5).json()["models"]


def embed(server: RemoteServer, model: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/openai/embeddings", json={"model": model, "input": "Paris is in France."},
                      headers=server.headers(), timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-zero")
    minilm = default_models("embeddings")[0]
    zero = {**minilm, "id": ZERO, "aliases": [],
            "scaling": {"min_instances": 0, "max_instances": 1, "target_ongoing_requests": 1,
                        "upscale_delay_s": 0.5, "downscale_delay_s": 2}}
    roomless = {**minilm, "id": ROOMLESS, "aliases": [],
                "scaling": {"min_instances": 0, "max_instances": 1, "num_cpus": ROOM,
                            "downscale_delay_s": 2}}
    # the roomless one first: it must not hold the other
    catalog = write_catalog(root / "catalog.yaml", [roomless, zero])
    # a cluster `ray start` made on this machine once, long gone: a local Ray is started all the same
    LATEST.parent.mkdir(parents=True, exist_ok=True)
    recorded = LATEST.read_text() if LATEST.exists() else None
    LATEST.write_text("127.0.0.1:9")
    server = RemoteServer(root, "--ray", "--catalog", str(catalog), env={"INFERD_RAY_DASHBOARD": "false"})
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # ready but for the roomless model
            if server.process.poll() is not None:
                raise RuntimeError(server.log())
            try:
                if health(server).get(f"{ZERO}:1", {}).get("status") == "ready":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(server.log())
        yield server
    finally:
        try:
            assert server.stop(timeout=60) == 0
        finally:
            _put_back(recorded)


def test_a_model_at_zero_replicas_gets_one_for_a_request_and_gives_it_back_when_idle(server):
    # it had a replica at start (the ingress learns the model from it) and gave it back
    wait_for(lambda: not replicas(ZERO), 60, "the idle model goes to zero replicas")
    started = time.monotonic()
    answer = embed(server, ZERO)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"][0]["embedding"]) == 384
    assert len(replicas(ZERO)) == 1  # made for this request (it waited for it: a cold start)
    assert time.monotonic() - started < 120
    wait_for(lambda: not replicas(ZERO), 60, "back to zero replicas when idle")


def test_a_model_without_room_answers_503_with_retry_after_until_a_node_joins(server):
    state = health(server)[f"{ROOMLESS}:1"]
    assert state["status"] == "loading" and "waiting for a replica" in state["error"], state
    started = time.monotonic()
    refused = embed(server, ROOMLESS)
    assert time.monotonic() - started < 5  # answered at once, not held
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
    assert "waiting for a replica" in refused.json()["error"]["message"]
    assert embed(server, ZERO).status_code == 200  # the others serve meanwhile

    # a node with room joins the cluster (a second Ray node on this machine, as `ray start` on a worker)
    import ray

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    ray.shutdown()
    # (`ray start` records its cluster in LATEST: the fixture puts LATEST back at the end)
    node = subprocess.Popen([RAY, "start", "--address", address, "--num-cpus", str(ROOM), "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: health(server)[f"{ROOMLESS}:1"]["status"] == "ready", 180,
                 "the model serves once its replica is placed")
        answer = embed(server, ROOMLESS)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"][0]["embedding"]) == 384
    finally:
        os.killpg(node.pid, signal.SIGTERM)  # `ray start --block` takes its node's processes with it
        node.wait(60)
