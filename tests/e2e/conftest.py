"""A real `inferd serve` process on a free port, driven by real clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, TEST_CACHE

INFERD = str(Path(sys.executable).with_name("inferd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RemoteServer:
    """Starts the server as a user would, waits until its models are ready, stops it cleanly."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.data_dir = data_dir
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = ADMIN_TOKEN
        self.log_path = data_dir / "server.log"
        environment = {
            **os.environ,
            "INFERD_ADMIN_TOKEN": ADMIN_TOKEN,
            "HF_HUB_OFFLINE": "1",
            "INFERD_CACHE_DIR": str(TEST_CACHE),  # the GGUF conversion is shared with other tests
            **(env or {}),
        }
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [INFERD, "serve", "--port", str(self.port), "--data-dir", str(data_dir), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
        )

    def wait_ready(self, timeout: float = 420) -> RemoteServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"inferd exited with {self.process.returncode}:\n{self.log()}")
            try:
                models = httpx.get(f"{self.base_url}/health", timeout=2).json()["models"]
                if models and all(m["status"] == "ready" for m in models.values()):
                    return self
            except (httpx.HTTPError, ValueError):  # not listening yet, or a proxy's text answer (Ray Serve's)
                pass
            time.sleep(0.2)
        raise TimeoutError(f"inferd did not become ready:\n{self.log()}")

    @property
    def pid(self) -> int:
        """The server process itself (``process`` is its supervisor)."""
        import psutil

        return psutil.Process(self.process.pid).children()[0].pid

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def default_models(*tasks: str) -> list[dict]:
    """The embedded default catalog's model entries (those of ``tasks`` only, when named)."""
    import yaml

    from importlib import resources

    data = yaml.safe_load(resources.files("inferd.catalog").joinpath("default.yaml").read_text())
    return [m for m in data["models"] if not tasks or m["task"] in tasks]


def write_catalog(path: Path, models: list[dict]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"models": models}))
    return path


def default_catalog_of(path: Path, *tasks: str) -> Path:
    """The default catalog's models of ``tasks``, written to ``path``."""
    return write_catalog(path, default_models(*tasks))


def embeddings_only_catalog(path: Path) -> Path:
    """The default catalog without its LLM: for servers that test the platform, not generation."""
    return default_catalog_of(path, "embeddings")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`inferd serve` on the embedded default catalog: MiniLM and SmolLM2 on vLLM."""
    remote = RemoteServer(
        tmp_path_factory.mktemp("server"), env={"INFERD_TOKEN_CACHE_TTL_S": "0.2"}
    ).wait_ready()
    yield remote
    remote.stop()


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
