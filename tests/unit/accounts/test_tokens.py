import asyncio

import pytest
from sqlalchemy import select

from inferd.accounts.db import async_url
from inferd.accounts.models import ApiToken
from inferd.accounts.tokens import TokenStore, hash_token


def test_plain_urls_get_async_drivers():
    assert async_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"


async def test_migrations_are_idempotent(db):
    await db.migrate()
    await db.migrate()


async def test_tokens_are_stored_hashed_and_verify(db):
    store = TokenStore(db)
    secret, row = await store.create("ci")
    assert secret.startswith("inferd_") and len(secret) > 40
    async with db.sessions() as session:
        stored = await session.scalar(select(ApiToken).where(ApiToken.token_id == row.token_id))
    assert stored.token_hash == hash_token(secret)
    assert secret not in (stored.token_hash, stored.name, stored.hint)
    info = await store.verify(secret)
    assert info is not None and info.token_id == row.token_id and info.name == "ci"
    assert await store.verify(secret + "x") is None
    assert await store.verify("") is None


async def test_revoked_tokens_stop_working(db):
    store = TokenStore(db)
    secret, row = await store.create("temp")
    assert await store.verify(secret)
    assert await store.revoke(row.token_id)
    assert await store.verify(secret) is None
    assert not await store.revoke(row.token_id)
    other, _ = await store.create("by-secret")
    assert await store.revoke(other)
    assert await store.verify(other) is None


async def test_revocation_from_another_process_is_seen_after_the_cache_ttl(db):
    server = TokenStore(db, cache_ttl_s=0.0)
    cli = TokenStore(db)
    secret, row = await cli.create("shared")
    assert await server.verify(secret)
    await cli.revoke(row.token_id)
    assert await server.verify(secret) is None


async def test_admin_token_is_made_once(db):
    store = TokenStore(db)
    first = await store.ensure_admin()
    assert first and first.startswith("inferd_")
    assert await store.ensure_admin() is None
    info = await store.verify(first)
    assert info.is_admin


async def test_preset_admin_token(db):
    store = TokenStore(db)
    assert await store.ensure_admin("inferd_preset") is None
    assert await store.ensure_admin("inferd_preset") is None
    assert (await store.verify("inferd_preset")).is_admin
    assert len(await store.list()) == 1


async def test_known_tokens_keep_working_while_the_database_is_down(db, monkeypatch):
    from inferd.errors import ServiceUnavailable

    store = TokenStore(db, cache_ttl_s=0.01)
    known, _ = await store.create("known")
    unknown, _ = await store.create("never-seen")
    assert await store.verify(known) is not None
    await asyncio.sleep(0.02)  # the cache entry expired

    def down(*args, **kwargs):
        raise ConnectionRefusedError("database down")

    monkeypatch.setattr(db, "sessions", down)
    assert (await store.verify(known)).name == "known"
    with pytest.raises(ServiceUnavailable):
        await store.verify(unknown)


async def test_requests_presenting_the_same_token_share_one_lookup(db, monkeypatch):
    store = TokenStore(db, cache_ttl_s=0.0)  # every verify goes past the cache
    secret, _ = await store.create("busy")
    real, opened = db.sessions, []

    def counting(*args, **kwargs):
        opened.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(db, "sessions", counting)
    answers = await asyncio.gather(*(store.verify(secret) for _ in range(200)))
    assert all(info is not None and info.name == "busy" for info in answers)
    assert len(opened) == 1  # one query for 200 requests in flight, not 200

    # a caller that leaves does not cancel the lookup the others wait on
    waiters = [asyncio.create_task(store.verify(secret)) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    assert all(info.name == "busy" for info in await asyncio.gather(*waiters[1:]))


async def test_a_lookup_in_flight_when_its_token_is_revoked_does_not_cache_it(db):
    store = TokenStore(db)
    secret, row = await store.create("racing")
    lookup = asyncio.create_task(store.verify(secret))
    await asyncio.sleep(0)  # the lookup has begun
    assert await store.revoke(row.token_id)
    await lookup  # whatever it read, it must not outlive the revocation in the cache
    assert await store.verify(secret) is None
