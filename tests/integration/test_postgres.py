"""The accounts on a real PostgreSQL (the machine image ships PostgreSQL 15): a throwaway
server on 127.0.0.1, started as the postgres user, removed afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

import pytest

from inferd.accounts.db import Database
from inferd.accounts.tokens import TokenStore
from inferd.accounts.usage import UsageRecorder, UsageRow, usage_summary
from tests.e2e.conftest import free_port


def _postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _postgres_bin()
    if bindir is None or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("PostgreSQL binaries (apt-get install postgresql) and root are needed for this test")
    root = tempfile.mkdtemp(prefix="inferd-pg-")
    shutil.chown(root, "postgres")
    data, port = os.path.join(root, "data"), free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    subprocess.run(
        [*as_postgres, f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(root, "log"),
         "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
        check=True, capture_output=True,
    )
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*as_postgres, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


async def test_accounts_on_postgresql(postgres_url):
    db = Database(postgres_url)
    assert db.url.startswith("postgresql+asyncpg://")
    await db.migrate()
    await db.migrate()
    store = TokenStore(db)
    secret, row = await store.create("pg")
    assert (await store.verify(secret)).token_id == row.token_id
    assert await store.revoke(row.token_id) and await store.verify(secret) is None
    recorder = UsageRecorder(db)
    for i in range(3):
        recorder.record(UsageRow(request_id=f"r{i}", token_id=row.token_id, model="m", version="1",
                                 task="embeddings", status="succeeded", input_tokens=5, cost_cents=0.25))
    await recorder.stop()
    [summary] = await usage_summary(db)
    assert summary["requests"] == 3 and summary["input_tokens"] == 15
    await db.close()
