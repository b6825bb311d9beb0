"""A throwaway PostgreSQL server for the tests (the machine image ships PostgreSQL 15;
`.ci/run` installs it from the distribution's packages where missing): started on 127.0.0.1 as
the postgres user, one database per test, removed afterwards.

Without PostgreSQL binaries (or root) the PostgreSQL variants skip, unless
``INFERD_TEST_REQUIRE_POSTGRES=1`` (CI sets it), where they fail instead."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


class Postgres:
    """A throwaway PostgreSQL server that a test can stop and start again."""

    AS_POSTGRES = ["runuser", "-u", "postgres", "--"]

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="inferd-pg-")
        shutil.chown(self.root, "postgres")
        self.data, self.port = os.path.join(self.root, "data"), free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        subprocess.run([*self.AS_POSTGRES, f"{bindir}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run(
            [*self.AS_POSTGRES, f"{self.bindir}/pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.root, "log"),
             "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start"],
            check=True, capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run([*self.AS_POSTGRES, f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "stop"],
                       capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    async def new_database(self) -> str:
        """A fresh, empty database on this server; its URL."""
        import asyncpg

        name = "t_" + secrets.token_hex(6)
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def start_postgres():
    bindir = _postgres_bin()
    if bindir is None or shutil.which("runuser") is None or os.geteuid() != 0:
        reason = "PostgreSQL binaries (apt-get install postgresql) and root are needed for this test"
        if os.environ.get("INFERD_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    server = Postgres(bindir)
    server.start()
    return server
