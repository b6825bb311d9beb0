"""npm's llm-interface (DeepInfra provider, JSON mode) against a real `inferd serve` on the
default catalog. Its node modules are installed by `make setup` where npm exists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).parent / "js"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed on this machine")
def test_llm_interface_json_mode(server):
    assert (JS / "node_modules" / "llm-interface").exists(), "run `make setup` (npm ci in tests/e2e/js)"
    env = {**os.environ, "INFERD_URL": server.base_url, "INFERD_TOKEN": server.token}
    done = subprocess.run(["node", str(JS / "llm_interface_json.js")], env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and len(lines) == 2, (done.stdout, done.stderr)
    for line in lines:
        assert line["ok"] and isinstance(line["results"], dict), line  # llm-interface parsed the JSON
