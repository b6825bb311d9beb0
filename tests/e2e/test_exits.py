"""Clean exits and crashes of a real `inferd serve`: no process of the server's group outlives
it (SIGTERM while vLLM loads, the server killed outright), and `kill -9` under load loses at
most the usage rows of the last flush interval."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import httpx
import psutil
import pytest

from tests.conftest import MINILM
from tests.e2e.conftest import RemoteServer, default_catalog_of, embeddings_only_catalog


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_for_vllm(server: RemoteServer, timeout: float = 240) -> int:
    """The server's process group, once vLLM's engine process is running in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log()
        try:
            worker = psutil.Process(server.pid)
            if any(p.name().startswith("VLLM") for p in worker.children(recursive=True)):
                return os.getpgid(worker.pid)
        except (IndexError, psutil.NoSuchProcess):
            pass
        time.sleep(0.2)
    raise TimeoutError(server.log())


def llm_only_server(tmp_path) -> RemoteServer:
    """The default catalog's LLM alone: its vLLM starts without waiting for the other models to load."""
    return RemoteServer(tmp_path, "--catalog", str(default_catalog_of(tmp_path / "catalog.yaml", "text-generation")))


def test_sigterm_while_vllm_loads_ends_every_process_of_the_server(tmp_path):
    server = llm_only_server(tmp_path)
    pgid = wait_for_vllm(server)
    time.sleep(2)  # loading the weights / compiling
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(60)
    while group_alive(pgid) and time.monotonic() - started < 60:
        time.sleep(0.1)
    assert not group_alive(pgid), [p.cmdline() for p in psutil.process_iter() if os.getpgid(p.pid) == pgid]
    assert time.monotonic() - started < 40


def test_a_server_killed_outright_leaves_no_process_behind(tmp_path):
    server = llm_only_server(tmp_path)
    pgid = wait_for_vllm(server)
    os.kill(server.pid, signal.SIGKILL)  # as the kernel's OOM killer would
    server.process.wait(60)
    deadline = time.monotonic() + 15
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pgid)


def test_a_ray_server_killed_outright_leaves_no_ray_process_behind(tmp_path):
    pytest.importorskip("ray.serve")
    catalog = embeddings_only_catalog(tmp_path / "catalog.yaml")
    server = RemoteServer(tmp_path, "--ray", "--catalog", str(catalog),
                          env={"INFERD_RAY_DASHBOARD": "false"}).wait_ready(timeout=300)
    try:
        pgid = os.getpgid(server.pid)
        group = [p for p in psutil.process_iter(["name"]) if _in_group(p, pgid)]
        raylet = next(p for p in group if p.info["name"] == "raylet")  # Ray's own processes are in the group...
        workers = raylet.children(recursive=True)  # ...its workers (the replica among them) in groups of their own
        assert any(" ".join(w.cmdline()).startswith("ray::ServeReplica") for w in workers)
    except BaseException:
        server.stop(timeout=60)
        raise
    os.kill(server.pid, signal.SIGKILL)  # as the kernel's OOM killer would: no teardown of its own
    server.process.wait(60)
    deadline = time.monotonic() + 30
    left = group + workers
    while left and time.monotonic() < deadline:
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    assert not left, [p.cmdline() for p in left]


def _in_group(proc: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(proc.pid) == pgid
    except (ProcessLookupError, PermissionError):
        return False


def test_kill_9_under_load_loses_at_most_the_last_flush(tmp_path):
    catalog = embeddings_only_catalog(tmp_path / "catalog.yaml")
    server = RemoteServer(tmp_path, "--catalog", str(catalog)).wait_ready()
    received: list[str] = []
    stop = threading.Event()

    def client():
        with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=10) as http:
            while not stop.is_set():
                try:
                    r = http.post("/v1/openai/embeddings", json={"model": MINILM, "input": ["a few words"] * 4})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    received.append(r.headers["x-request-id"])

    clients = [threading.Thread(target=client) for _ in range(8)]
    for t in clients:
        t.start()
    time.sleep(4)
    os.kill(server.pid, signal.SIGKILL)
    stop.set()
    for t in clients:
        t.join(30)
    server.process.wait(30)
    server.stop()
    restarted = RemoteServer(tmp_path, "--catalog", str(catalog)).wait_ready()
    restarted.stop()
    with sqlite3.connect(tmp_path / "inferd.db") as db:
        stored = {row[0] for row in db.execute("SELECT request_id FROM usage_records WHERE status = 'succeeded'")}
    lost = [rid for rid in received if rid not in stored]
    rate = len(received) / 4
    print(f"kill -9 under load: {len(received)} answered, {len(lost)} usage rows lost "
          f"(~{rate:.0f} requests/s; the flush interval is 0.5 s)")
    assert len(received) > 50
    assert len(lost) <= rate * 0.5 + 16  # at most what one flush interval holds
