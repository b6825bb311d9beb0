"""Scoped tokens and the spending ledger across processes sharing one database (two stores on
one database stand for two processes)."""

import asyncio
from datetime import timedelta

import pytest

from inferd.accounts.models import utcnow
from inferd.accounts.scoped import ScopedTokens
from inferd.accounts.spending import SpendLedger, scope_key
from inferd.accounts.tokens import TokenStore
from inferd.accounts.usage import UsageRecorder, UsageRow
from inferd.errors import Unauthorized


async def test_every_process_verifies_every_others_scoped_tokens_even_after_a_racing_first_start(db):
    tokens = TokenStore(db)
    _, parent = await tokens.create("parent")
    first, second = ScopedTokens(db, tokens), ScopedTokens(db, TokenStore(db))
    await asyncio.gather(first.start(), second.start())
    made_by_first, scope_id = first.mint(parent, models=["m"], expires_at=utcnow() + timedelta(hours=1),
                                         spending_limit_nano_usd=7)
    made_by_second, _ = second.mint(parent, models=None, expires_at=utcnow() + timedelta(hours=1),
                                    spending_limit_nano_usd=None)
    for store in (first, second):
        one, two = await store.verify(made_by_first), await store.verify(made_by_second)
        assert one.scope.scope_id == scope_id and one.scope.models == {"m"} and one.scope.spending_limit_nano_usd == 7
        assert two.scope.models is None and two.token_id == parent.token_id
    expired, _ = first.mint(parent, models=None, expires_at=utcnow() - timedelta(seconds=1),
                            spending_limit_nano_usd=None)
    with pytest.raises(Unauthorized, match="expired"):
        await second.verify(expired)


async def test_a_settings_secret_replaces_the_stored_key(db):
    tokens = TokenStore(db)
    _, parent = await tokens.create("parent")
    one, two = ScopedTokens(db, tokens, "s" * 40), ScopedTokens(db, tokens, "s" * 40)
    await one.start()
    token, _ = one.mint(parent, models=None, expires_at=utcnow() + timedelta(hours=1), spending_limit_nano_usd=None)
    assert (await two.verify(token)).token_id == parent.token_id
    with pytest.raises(Unauthorized):
        await ScopedTokens(db, tokens, "t" * 40).verify(token)


async def test_spending_is_seen_by_another_process_after_its_refresh(db):
    here_rows, there_rows = UsageRecorder(db), UsageRecorder(db)
    here = SpendLedger(db, here_rows.flush, refresh_s=0.05)
    there = SpendLedger(db, there_rows.flush, refresh_s=0.05)
    key = scope_key("sc_1")
    await here.prime(key)
    await there.prime(key)
    here.running(key, 1, 400)  # a stream running here
    assert here.spent(key) == 400 and there.spent(key) == 0
    here.settle(key, 1, 500)
    here_rows.record(UsageRow(request_id="r1", token_id="t", model="m", version="1", task="x", status="succeeded",
                              scope_id="sc_1", cost_nano_usd=500))
    assert here.spent(key) == 500
    await asyncio.sleep(0.06)
    await here.prime(key)  # writes its own rows first: counted once, not twice
    assert here.spent(key) == 500
    await here_rows.flush()
    await there.prime(key)
    assert there.spent(key) == 500
