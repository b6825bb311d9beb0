"""The accounts on a real PostgreSQL (the machine image ships PostgreSQL 15): a throwaway
server on 127.0.0.1, started as the postgres user, removed afterwards."""

from __future__ import annotations

import pytest

from inferd.accounts.db import Database
from inferd.accounts.tokens import TokenStore
from inferd.accounts.billing import bill, parse_period
from inferd.accounts.usage import UsageRecorder, UsageRow
from tests.postgres import start_postgres


@pytest.fixture(scope="module")
def postgres():
    """A server of this module's own: a test here stops and starts it."""
    server = start_postgres()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def postgres_url(postgres):
    return postgres.url


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
                                 task="embeddings", status="succeeded", input_tokens=5, cost_nano_usd=2_500_000))
    await recorder.stop()
    (month,) = (await bill(db, start=parse_period("current"), account_id=None))["months"]
    assert month["items"][0]["requests"] == 3 and month["items"][0]["input_tokens"] == 15
    assert month["total_cost_nano_usd"] == 7_500_000
    await db.close()


async def test_a_database_outage_under_load_loses_no_usage_row(postgres, tmp_path, minilm_path):
    """PostgreSQL stopped for 10 s under load: inference goes on for a token verified before,
    the usage rows go to the journal, and every one of them is in the database after it returns."""
    import asyncio
    import time

    from sqlalchemy import func, select

    from inferd.accounts.models import UsageRecord
    from inferd.catalog.catalog import Catalog
    from inferd.catalog.spec import ModelSpec
    from tests.conftest import MINILM, make_settings, start_app

    catalog = Catalog([ModelSpec(id=MINILM, task="embeddings", backend="sentence-transformers",
                                 source=str(minilm_path))])
    settings = make_settings(tmp_path, database_url=postgres.url, usage_flush_interval_s=0.1, token_cache_ttl_s=0.5)
    async for h in start_app(settings, catalog):
        answered: list[str] = []
        failed: list[int] = []

        async def load(seconds: float) -> None:
            end = time.monotonic() + seconds

            async def worker():
                while time.monotonic() < end:
                    r = await h.client.post("/v1/openai/embeddings", json={"model": MINILM, "input": "a sentence"})
                    (answered.append(r.headers["x-request-id"]) if r.status_code == 200 else failed.append(r.status_code))
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(worker() for _ in range(4)))

        await load(1)
        postgres.stop()
        during = len(answered)
        await load(10)
        assert len(answered) - during > 50 and not failed, failed[:5]  # served through the outage
        assert h.state.usage.journaled
        postgres.start()
        deadline = time.monotonic() + 60
        while h.state.usage.journaled and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await h.state.usage.flush()
        async with h.state.db.sessions() as session:
            stored = await session.scalar(select(func.count()).select_from(UsageRecord)
                                          .where(UsageRecord.request_id.in_(answered)))
        print(f"database outage: {len(answered)} answered ({len(answered) - during} during 10 s down), "
              f"{stored} rows stored")
        assert stored == len(answered)
