"""Accounts, what tokens carry (expiry, networks, limits, last use), and the upgrade from the
schema before accounts (migration 0003)."""

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from inferd.accounts import db as db_module
from inferd.accounts.db import Database
from inferd.accounts.models import (
    ADMIN_ACCOUNT,
    DEFAULT_ACCOUNT,
    ApiToken,
    aware,
    utcnow,
)
from inferd.accounts.store import AccountStore
from inferd.accounts.tokens import TokenStore, hash_token
from inferd.accounts.usage import UsageJournal
from inferd.errors import Conflict, NotFound


async def test_an_account_is_made_with_its_first_token(db):
    tokens = TokenStore(db)
    accounts = AccountStore(db, tokens)
    made = await accounts.create("team-a", rate_limit=5)
    info = await tokens.verify(made.token)
    assert info.account_id == made.account.account_id and not info.is_admin and info.rate_limit == 5
    listed = {account.account_id: n for account, n in await accounts.list()}
    assert listed[made.account.account_id] == 1
    with pytest.raises(NotFound):
        await accounts.get("acc_nope")


async def test_disabling_an_account_stops_its_tokens_at_once_and_the_admin_cannot_be_disabled(db):
    tokens = TokenStore(db, cache_ttl_s=60)
    accounts = AccountStore(db, tokens)
    await tokens.ensure_admin()
    made = await accounts.create("team-b")
    assert not (await tokens.verify(made.token)).account_disabled
    await accounts.update(made.account.account_id, disabled=True)
    assert (await tokens.verify(made.token)).account_disabled  # cached for 60 s, yet seen at once
    await accounts.update(made.account.account_id, disabled=False)
    assert not (await tokens.verify(made.token)).account_disabled
    with pytest.raises(Conflict):
        await accounts.update(ADMIN_ACCOUNT, disabled=True)


async def test_a_disabled_account_is_seen_by_another_process_within_the_ttl(db):
    server = TokenStore(db, cache_ttl_s=0.05)
    cli_tokens = TokenStore(db)
    made = await AccountStore(db, cli_tokens).create("team-c")
    assert not (await server.verify(made.token)).account_disabled
    await AccountStore(db, cli_tokens).update(made.account.account_id, disabled=True)
    await asyncio.sleep(0.06)
    assert (await server.verify(made.token)).account_disabled


async def test_a_token_narrows_its_accounts_limits_never_widens_them(db):
    tokens = TokenStore(db)
    made = await AccountStore(db, tokens).create("team-d", rate_limit=10, tpm_rate_limit=1000)
    wide, _ = await tokens.create("wide", account_id=made.account.account_id, rate_limit=50)
    narrow, _ = await tokens.create("narrow", account_id=made.account.account_id, rate_limit=3,
                                    tpm_rate_limit=100)
    assert ((await tokens.verify(wide)).rate_limit, (await tokens.verify(wide)).tpm_rate_limit) == (10, 1000)
    assert ((await tokens.verify(narrow)).rate_limit, (await tokens.verify(narrow)).tpm_rate_limit) == (3, 100)


async def test_expiry_and_allowed_networks(db):
    tokens = TokenStore(db)
    secret, _ = await tokens.create("short", expires_at=utcnow() - timedelta(seconds=1),
                                    allowed_ips=["10.0.0.0/8", "::1"])
    info = await tokens.verify(secret)
    assert info.expired()
    assert info.allows("10.1.2.3") and info.allows("::1")
    assert not info.allows("192.168.0.1") and not info.allows(None) and not info.allows("not-an-ip")
    anywhere, _ = await tokens.create("anywhere")
    assert (await tokens.verify(anywhere)).allows("203.0.113.9")
    with pytest.raises(ValueError, match="CIDR"):
        await tokens.create("bad", allowed_ips=["10.0.0.0/33"])


async def test_token_names_are_unique_per_account_when_asked(db):
    tokens = TokenStore(db)
    await tokens.create("ci", account_id=DEFAULT_ACCOUNT, unique_name=True)
    with pytest.raises(Conflict):
        await tokens.create("ci", account_id=DEFAULT_ACCOUNT, unique_name=True)
    made = await AccountStore(db, tokens).create("other")
    await tokens.create("ci", account_id=made.account.account_id, unique_name=True)  # another account: fine


async def test_last_use_is_recorded_off_the_request_path(db):
    tokens = TokenStore(db, cache_ttl_s=0)
    secret, row = await tokens.create("used")
    assert row.last_used_at is None
    before = utcnow()
    await tokens.verify(secret)
    await tokens.settle()
    used = aware((await tokens.get(row.token_id)).last_used_at)
    assert used is not None and used >= before - timedelta(seconds=1)


def _upgrade_to(connection, revision):
    config = Config()
    config.set_main_option("script_location", str(db_module._MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_a_database_from_before_accounts_upgrades_in_place(blank_db_url):
    db = Database(blank_db_url)
    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade_to, "0002")
        now = utcnow()
        await conn.execute(sa.text(
            "INSERT INTO api_tokens (token_id, name, token_hash, hint, is_admin, created_at) VALUES "
            "('tok_a', 'admin', :ha, 'aaaa', :yes, :now), ('tok_u', 'ci', :hu, 'uuuu', :no, :now)"),
            {"ha": hash_token("inferd_old_admin"), "hu": hash_token("inferd_old_user"), "now": now,
             "yes": True, "no": False})
        await conn.execute(sa.text(
            "INSERT INTO usage_records (request_id, token_id, model, version, task, input_tokens, output_tokens, "
            "images, seconds, cost_cents, runtime_ms, status, created_at) VALUES "
            "('r1', 'tok_u', 'm', '1', 'embeddings', 7, 0, 0, 0, 0.0000035, 1, 'succeeded', :now), "
            "('r2', 'tok_a', 'm', '1', 'embeddings', 3, 0, 0, 0, 1.25, 1, 'succeeded', :now)"), {"now": now})
    await db.migrate()
    tokens = TokenStore(db)
    admin, user = await tokens.verify("inferd_old_admin"), await tokens.verify("inferd_old_user")
    assert admin.is_admin and admin.account_id == ADMIN_ACCOUNT
    assert not user.is_admin and user.account_id == DEFAULT_ACCOUNT
    async with db.sessions() as session:
        rows = dict((await session.execute(sa.text(
            "SELECT request_id, cost_nano_usd || ':' || account_id FROM usage_records"))).all())
        columns = [c["name"] for c in await session.run_sync(
            lambda s: sa.inspect(s.connection()).get_columns("usage_records"))]
    assert rows == {"r1": f"35:{DEFAULT_ACCOUNT}", "r2": f"12500000:{ADMIN_ACCOUNT}"}
    assert "cost_cents" not in columns
    assert await tokens.ensure_admin() is None  # the old admin token is still the admin's
    await db.close()


async def test_a_journal_written_before_the_upgrade_replays_with_exact_costs(tmp_path):
    journal = UsageJournal(tmp_path / "journal.jsonl")
    journal.path.write_bytes(
        b'{"request_id":"r1","token_id":"tok_u","model":"m","version":"1","task":"embeddings",'
        b'"status":"succeeded","input_tokens":7,"output_tokens":0,"images":0.0,"seconds":0.0,'
        b'"cost_cents":0.0000035,"runtime_ms":1,"created_at":"2026-11-30T10:00:00Z","client_request_id":null}\n')
    (row,) = journal.take()
    assert row.cost_nano_usd == 35 and row.account_id is None


async def test_tokens_table_keeps_no_secret(db):
    tokens = TokenStore(db)
    secret, row = await tokens.create("x", allowed_ips=["127.0.0.1"])
    async with db.sessions() as session:
        stored = await session.get(ApiToken, row.id)
    assert secret not in repr(vars(stored)) and stored.allowed_ips == ["127.0.0.1/32"]
