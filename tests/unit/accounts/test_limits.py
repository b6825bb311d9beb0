"""Concurrency slots, exact on one process and across processes sharing a database (two
SharedSlots on one database stand for two processes), self-healing after a crash; tokens per
minute, in one process and shared by two."""

import asyncio

import pytest
from sqlalchemy import update

from inferd.accounts.limits import Limits, LocalSlots, SharedSlots, SharedTokensPerMinute, TokensPerMinute
from inferd.accounts.models import RateTokens
from inferd.accounts.tokens import TokenInfo
from inferd.errors import Overloaded


async def race(slots_list, n: int, limit: int, key: str = "c:acc:m"):
    """``n`` requests at once, spread over the processes; ([(process, hold)], refusals)."""
    async def one(i):
        owner = slots_list[i % len(slots_list)]
        try:
            return owner, await owner.acquire([(key, limit)])
        except Overloaded as exc:
            assert exc.message.startswith("Rate limited") and exc.retry_after >= 1
            return None
    results = await asyncio.gather(*(one(i) for i in range(n)))
    return [r for r in results if r is not None], sum(r is None for r in results)


async def test_local_slots_admit_exactly_the_limit():
    slots = LocalSlots()
    holds, refused = await race([slots], 250, 200)
    assert (len(holds), refused) == (200, 50) and slots.held("c:acc:m") == 200
    slots.release(holds.pop()[1])
    assert len((await race([slots], 5, 200))[0]) == 1


@pytest.mark.parametrize("processes", [1, 2])
async def test_shared_slots_admit_exactly_the_limit_on_one_process_and_over_two(db, processes):
    slots = [SharedSlots(db) for _ in range(processes)]
    for s in slots:
        await s.start()
    try:
        holds, refused = await race(slots, 250, 200)
        assert (len(holds), refused) == (200, 50)
        assert sum(s.held("c:acc:m") for s in slots) == 200
        for owner, hold in holds[:30]:  # 30 finish
            owner.release(hold)
        await asyncio.sleep(0.1)  # releases are written in the next turn
        again, refused = await race(slots, 40, 200)
        assert (len(again), refused) == (30, 10)
    finally:
        for s in slots:
            await s.stop()


async def test_a_crashed_process_frees_its_slots_within_the_lease(db):
    crashed, survivor = SharedSlots(db, lease_s=0.6), SharedSlots(db, lease_s=0.6)
    await crashed.start()
    await survivor.start()
    try:
        holds, _ = await race([crashed], 5, 5)
        assert len(holds) == 5
        for task in (crashed._writer, crashed._renewer):  # kill -9: nothing given back, no renewal
            task.cancel()
        assert (await race([survivor], 1, 5))[1] == 1
        await asyncio.sleep(0.7)
        assert len((await race([survivor], 3, 5))[0]) == 3
    finally:
        await survivor.stop()


async def test_a_client_that_leaves_while_waiting_does_not_keep_a_slot(db):
    slots = SharedSlots(db)
    await slots.start()
    try:
        waiting = asyncio.ensure_future(slots.acquire([("c:a:m", 1)]))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await asyncio.sleep(0.1)
        assert slots.held("c:a:m") == 0
        assert len((await race([slots], 1, 1, "c:a:m"))[0]) == 1
    finally:
        await slots.stop()


def test_tokens_per_minute_slide():
    tpm = TokensPerMinute()
    tpm.add("m:acc", 700)
    tpm.add("m:acc", 400)
    assert tpm.used("m:acc") == 1100 and tpm.used("m:other") == 0
    events = tpm._events["m:acc"]
    events[0] = (events[0][0] - 30, events[0][1])  # the first came 30 s before the second
    assert tpm.used("m:acc", now=events[1][0] + 31) == 400  # it slid out of the minute
    assert 1 <= tpm.retry_after("m:acc") <= 60
    assert tpm.used("m:acc", now=events[0][0] + 61) == 0


async def test_while_the_database_is_unreachable_a_process_admits_within_its_own_count(db, monkeypatch):
    slots = SharedSlots(db)
    await slots.start()
    try:
        async def unreachable(*_):
            raise ConnectionRefusedError("the database is down")

        monkeypatch.setattr(slots, "_write", unreachable)
        holds, refused = await race([slots], 12, 10)
        assert (len(holds), refused) == (10, 2)  # exact within the process, not refused wholesale
        monkeypatch.undo()
        slots._down_until = 0.0  # as when the retry time has passed
        for owner, hold in holds:
            owner.release(hold)
        await asyncio.sleep(0.1)
        assert len((await race([slots], 10, 10))[0]) == 10  # back in the database, rows rewritten
    finally:
        await slots.stop()


async def test_tokens_per_minute_are_shared_by_the_processes_on_one_database(db):
    a, b = SharedTokensPerMinute(db, "p_a"), SharedTokensPerMinute(db, "p_b")
    for tpm in (a, b):
        tpm.FLUSH_S = 0.05
        await tpm.start()
    try:
        a.add("m:acc", 700)
        await asyncio.sleep(0.2)  # a writes it
        await b.refresh(["m:acc", "m:other"])
        assert b.used("m:acc") == 700 and b.used("m:other") == 0
        b.add("m:acc", 400)
        assert b.used("m:acc") == 1100  # its own at once
        await asyncio.sleep(0.2)
        await a.refresh(["m:acc"])
        assert a.used("m:acc") == 1100
        assert 55 <= a.retry_after("m:acc") <= 65  # when b's bucket leaves the minute
        # buckets older than the minute do not count
        async with db.engine.begin() as conn:
            await conn.execute(update(RateTokens).where(RateTokens.holder == "p_b").values(bucket=RateTokens.bucket - 13))
        await asyncio.sleep(0.1)
        await a.refresh(["m:acc"])
        assert a.used("m:acc") == 700
    finally:
        for tpm in (a, b):
            await tpm.stop()


async def test_a_limit_on_tokens_per_minute_refuses_on_the_other_process(db):
    token = TokenInfo(token_id="tok_1", name="t", account_id="acc_1", account_tpm_rate_limit=1000)
    processes = []
    for holder in ("p_a", "p_b"):
        tpm = SharedTokensPerMinute(db, holder)
        tpm.FLUSH_S = 0.05
        limits = Limits(LocalSlots(), 200, None, tpm)
        await limits.start()
        processes.append(limits)
    a, b = processes
    try:
        hold = await a.admit(token, "m")
        a.done(token, hold, 1200)  # one request may take the minute past the limit...
        await asyncio.sleep(0.2)
        with pytest.raises(Overloaded) as refused:  # ...and then the other process refuses too
            await b.admit(token, "m")
        assert "1000 tokens per minute" in refused.value.message and refused.value.retry_after > 50
        other = TokenInfo(token_id="tok_2", name="u", account_id="acc_2", account_tpm_rate_limit=1000)
        b.done(other, await b.admit(other, "m"), 10)  # another account is not counted with it
    finally:
        for limits in processes:
            await limits.stop()


async def test_tokens_not_written_while_the_database_is_unreachable_are_written_later(db, monkeypatch):
    a, b = SharedTokensPerMinute(db, "p_a"), SharedTokensPerMinute(db, "p_b")
    a.add("m:acc", 300)
    real = db.engine

    class Down:
        def begin(self):
            raise ConnectionRefusedError("the database is down")

    monkeypatch.setattr(db, "engine", Down())
    await a.flush()
    assert a.used("m:acc") == 300  # counted here meanwhile
    monkeypatch.setattr(db, "engine", real)
    await a.flush()
    await b.refresh(["m:acc"])
    assert b.used("m:acc") == 300
