"""Property-based fuzzing of the whole OpenAPI description against a real `inferd serve`, tokens
on, every route and dialect (schemathesis, fuzzing phase): no response is a 5xx, nothing hangs,
and the server is healthy afterwards. Most generated requests name a served model
(tests/e2e/fuzz_hooks.py), so they reach the serving code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.e2e.conftest import RemoteServer, default_models, write_catalog

EXAMPLES = int(os.environ.get("INFERD_FUZZ_EXAMPLES", "75"))  # per operation (4m15 at 150 here, 2m30 at 100)


def fuzz_catalog(path: Path, tiny_lm: Path) -> Path:
    """The default catalog's encoders, and a tiny random Llama (context 128: the longest answers of
    the fuzzed requests, a third of the campaign's server time at 256, are not what it tests) for
    generation."""
    return write_catalog(path, [m for m in default_models() if m["task"] != "text-generation"] + [{
        "id": "tiny", "task": "text-generation", "backend": "transformers", "source": str(tiny_lm),
        "limits": {"context_length": 128, "max_batch_size": 16, "queue_size": 64},
    }])


def test_fuzzing_every_route_finds_no_server_error(tmp_path, tiny_lm_dir):
    catalog = fuzz_catalog(tmp_path / "catalog.yaml", tiny_lm_dir)
    server = RemoteServer(tmp_path, "--catalog", str(catalog), "--access-log").wait_ready()
    ready_at = len(server.log())
    try:
        st = Path(sys.executable).with_name("st")
        run = subprocess.run(
            [str(st), "run", f"{server.base_url}/openapi.json", "-H", f"Authorization: Bearer {server.token}",
             "--checks", "not_a_server_error", "--phases", "fuzzing", "--max-examples", str(EXAMPLES),
             "--request-timeout", "60", "--workers", "2", "--seed", "12", "--no-color"],
            capture_output=True, text=True, timeout=1200, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks", "PYTHONPATH": str(REPO)},
        )
        report = run.stdout + run.stderr
        generated = re.search(r"(\d+) generated", report)
        assert generated, report[-3000:]
        print(f"schemathesis sent {generated.group(1)} requests")
        assert run.returncode == 0, report[-5000:]
        assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200
        server_errors = [line for line in server.log()[ready_at:].splitlines() if re.search(r"-> 5\d\d ", line)]
        assert not server_errors, server_errors[:10]
    finally:
        server.stop()
