import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select

from inferd.accounts.billing import bill
from inferd.accounts.db import Database
from inferd.accounts.models import UsageRecord
from inferd.accounts.usage import UsageRecorder, UsageRow


def row(i: int, status: str = "succeeded") -> UsageRow:
    return UsageRow(
        request_id=f"r{i}", token_id="tok_1", model="m", version="1", task="embeddings",
        status=status, input_tokens=10, cost_nano_usd=5_000_000,
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


async def test_a_failed_write_keeps_the_rows(blank_db_url):
    unmigrated = Database(blank_db_url)  # no tables yet: the INSERT fails
    recorder = UsageRecorder(unmigrated, flush_interval_s=3600)
    recorder.record(row(1))
    assert await recorder.flush() == 0
    assert recorder.pending == 1
    await unmigrated.migrate()
    assert await recorder.flush() == 1
    assert await count(unmigrated) == 1
    await unmigrated.close()


async def test_the_bill_sums_every_row_of_the_month_exactly(db):
    recorder = UsageRecorder(db)
    for i in range(3):
        recorder.record(row(i))
    recorder.record(row(9, status="failed"))
    await recorder.flush()
    now = datetime.now(UTC)
    (month,) = (await bill(db, start=(now.year, now.month), account_id=None))["months"]
    (item,) = month["items"]
    assert item["requests"] == 4 and item["input_tokens"] == 40
    assert month["total_cost_nano_usd"] == item["cost_nano_usd"] == 20_000_000 and month["total_cost"] == 2
    assert (await bill(db, start=(now.year, now.month), account_id="acc_other"))["months"][0]["items"] == []


async def test_stop_during_a_flush_loses_nothing(db, monkeypatch):
    recorder = UsageRecorder(db, flush_interval_s=0.01)
    insert = recorder._insert
    started = asyncio.Event()

    async def slow_insert(rows):
        started.set()
        await asyncio.sleep(0.3)  # the database is slow: stop() arrives mid-flush
        return await insert(rows)

    monkeypatch.setattr(recorder, "_insert", slow_insert)
    await recorder.start()
    for i in range(100):
        recorder.record(row(i))
    await started.wait()
    for i in range(100, 150):
        recorder.record(row(i))
    await recorder.stop()
    assert await count(db) == 150


async def test_rows_are_journaled_while_the_database_is_down_and_replayed_once(db, tmp_path, monkeypatch):
    journal = tmp_path / "journal.jsonl"
    recorder = UsageRecorder(db, flush_interval_s=0.01, journal=journal, max_backoff_s=0.05)
    insert = recorder._insert
    down = True

    async def flaky(rows):
        if down and rows:
            raise ConnectionRefusedError("database down")
        return await insert(rows)

    monkeypatch.setattr(recorder, "_insert", flaky)
    await recorder.start()
    for i in range(300):
        recorder.record(row(i))
        if i % 50 == 0:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert recorder.pending == 0 and journal.stat().st_size > 0  # on disk, not in memory
    assert await count(db) == 0
    down = False
    for _ in range(200):
        if await count(db) == 300:
            break
        await asyncio.sleep(0.02)
    assert await count(db) == 300 and not journal.exists()
    await recorder.stop()


async def test_a_journal_left_by_a_crash_is_replayed_at_start_without_duplicates(db, tmp_path):
    from inferd.accounts.usage import UsageJournal

    journal = UsageJournal(tmp_path / "journal.jsonl")
    first = UsageRecorder(db, flush_interval_s=3600)
    for i in range(10):
        first.record(row(i))
    await first.flush()  # rows 0-9 reached the database...
    journal.append([row(i) for i in range(15)])  # ...and a crash left 0-14 in the journal too
    with open(journal.path, "ab") as out:
        out.write(b'{"request_id": "torn')  # the last append was cut short
    recorder = UsageRecorder(db, flush_interval_s=0.01, journal=journal.path)
    await recorder.start()
    for _ in range(100):
        if not journal.path.exists():
            break
        await asyncio.sleep(0.02)
    await recorder.stop()
    assert await count(db) == 15  # each request id once


async def test_a_cancelled_flush_keeps_its_rows_for_the_next(db, monkeypatch):
    recorder = UsageRecorder(db, flush_interval_s=3600)
    insert = recorder._insert

    async def slow(rows):
        await asyncio.sleep(0.2)
        return await insert(rows)

    monkeypatch.setattr(recorder, "_insert", slow)
    recorder.record(row(1))
    task = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.3)  # the shielded write finishes
    assert await count(db) == 1
