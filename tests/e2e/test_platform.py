"""The command line against a running server: tokens made and revoked, usage, models, and
a clean stop that writes every usage record; a client that disconnects cancels its work."""

import asyncio
import re
import subprocess
import time

import httpx
import pytest

from tests.conftest import MINILM
from tests.e2e.conftest import INFERD, RemoteServer, embeddings_only_catalog


def cli(*args: str, data_dir) -> str:
    result = subprocess.run(
        [INFERD, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def embed(server, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/openai/embeddings",
        json={"model": MINILM, "input": "hi"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_tokens_made_and_revoked_by_the_cli_work_against_the_running_server(server):
    out = cli("tokens", "create", "e2e-user", data_dir=server.data_dir)
    token = re.search(r"token:\s+(\S+)", out).group(1)
    token_id = re.search(r"token_id:\s+(\S+)", out).group(1)
    assert embed(server, token).status_code == 200
    listing = cli("tokens", "list", data_dir=server.data_dir)
    assert token_id in listing and token not in listing
    cli("tokens", "revoke", token_id, data_dir=server.data_dir)
    deadline = time.monotonic() + 5
    while embed(server, token).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert embed(server, token).status_code == 401


def test_models_list_command():
    out = subprocess.run([INFERD, "models", "list"], capture_output=True, text=True, check=True).stdout
    assert MINILM in out and "embeddings" in out and "input_tokens" in out


async def test_a_disconnecting_client_cancels_its_queued_work(server):
    long_texts = [f"document {i} " + "with many words in it " * 40 for i in range(160)]
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers(), timeout=120) as client:
        heavy = asyncio.create_task(
            client.post("/v1/openai/embeddings", json={"model": MINILM, "input": long_texts})
        )
        await asyncio.sleep(0.3)
        # a raw client that sends a request and hangs up while it is still queued
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = b'{"model": "%s", "input": ["abandoned request"]}' % MINILM.encode()
        writer.write(
            b"POST /v1/openai/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {server.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        assert (await heavy).status_code == 200
        metrics = (await client.get("/metrics")).text
    cancelled = re.search(
        rf'inferd_model_requests_total{{model="{re.escape(MINILM)}",status="cancelled",task="embeddings"}} (\S+)',
        metrics,
    )
    assert cancelled and float(cancelled.group(1)) >= 1
    assert f'inferd_queue_depth{{model="{MINILM}"}} 0.0' in metrics


def test_a_clean_stop_writes_every_usage_record(tmp_path):
    catalog = embeddings_only_catalog(tmp_path / "catalog.yaml")
    server = RemoteServer(tmp_path, "--catalog", str(catalog), env={"INFERD_USAGE_FLUSH_INTERVAL_S": "3600"}).wait_ready()
    try:
        for _ in range(25):
            assert embed(server, server.token).status_code == 200
    finally:
        assert server.stop() == 0
    out = cli("usage", data_dir=tmp_path)
    row = next(line for line in out.splitlines() if line.strip().startswith(MINILM))
    assert re.search(r"input_tokens\s+25\s", row), out
    assert "flushed" in server.log()


@pytest.mark.parametrize("flag", ["--help"])
def test_help_explains_every_command(flag):
    out = subprocess.run([INFERD, flag], capture_output=True, text=True, check=True).stdout
    for command in ("serve", "models", "tokens", "usage"):
        assert command in out
