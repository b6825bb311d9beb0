import asyncio

import pytest
from sqlalchemy import func, select

from inferd.accounts.db import Database
from inferd.accounts.models import UsageRecord
from inferd.accounts.usage import UsageRecorder, UsageRow, usage_summary


def row(i: int, status: str = "succeeded") -> UsageRow:
    return UsageRow(
        request_id=f"r{i}", token_id="tok_1", model="m", version="1", task="embeddings",
        status=status, input_tokens=10, cost_cents=0.5,
    )


async def count(db) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(UsageRecord))


async def test_records_are_written_in_the_background(db):
    recorder = UsageRecorder(db, flush_interval_s=0.02)
    await recorder.start()
    for i in range(5):
        recorder.record(row(i))
    assert await count(db) == 0  # nothing written on the caller's path
    for _ in range(100):
        if await count(db) == 5:
            break
        await asyncio.sleep(0.02)
    assert await count(db) == 5
    await recorder.stop()


async def test_stop_flushes_everything(db):
    recorder = UsageRecorder(db, flush_interval_s=3600)
    await recorder.start()
    for i in range(1000):
        recorder.record(row(i))
    await recorder.stop()
    assert await count(db) == 1000
    assert recorder.pending == 0


async def test_a_failed_write_keeps_the_rows(tmp_path):
    unmigrated = Database(f"sqlite:///{tmp_path}/fresh.db")  # no tables yet: the INSERT fails
    recorder = UsageRecorder(unmigrated, flush_interval_s=3600)
    recorder.record(row(1))
    assert await recorder.flush() == 0
    assert recorder.pending == 1
    await unmigrated.migrate()
    assert await recorder.flush() == 1
    assert await count(unmigrated) == 1
    await unmigrated.close()


async def test_summary_groups_by_model_and_status(db):
    recorder = UsageRecorder(db)
    for i in range(3):
        recorder.record(row(i))
    recorder.record(row(9, status="failed"))
    await recorder.flush()
    summary = {(r["model"], r["status"]): r for r in await usage_summary(db)}
    assert summary[("m", "succeeded")]["requests"] == 3
    assert summary[("m", "succeeded")]["input_tokens"] == 30
    assert summary[("m", "succeeded")]["cost_cents"] == pytest.approx(1.5)
    assert summary[("m", "failed")]["requests"] == 1
