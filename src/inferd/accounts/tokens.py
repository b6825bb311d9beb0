"""API tokens: made random, stored as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from inferd.accounts.db import Database
from inferd.accounts.models import ApiToken, utcnow
from inferd.errors import ServiceUnavailable

log = logging.getLogger(__name__)

TOKEN_PREFIX = "inferd_"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_id: str
    name: str
    is_admin: bool


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens in the database, with a short in-process cache of verified ones.

    A token revoked from another process (``inferd tokens revoke``) stops working
    within ``cache_ttl_s``; one revoked through this store stops at once. While the database is
    unreachable, tokens verified before keep working and unknown ones get a 503.

    Requests that present the same token while it is being looked up share that one lookup: when
    a busy token's cache entry expires, 640 requests in flight make one query, not 640 (each
    costs the event loop a millisecond or two of ORM work).
    """

    def __init__(self, db: Database, cache_ttl_s: float = 5.0):
        self._db = db
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[TokenInfo, float]] = {}
        self._lookups: dict[str, asyncio.Future[TokenInfo | None]] = {}
        self._revocations = 0  # a lookup that began before a revocation does not cache its answer

    async def create(self, name: str, *, admin: bool = False, secret: str | None = None) -> tuple[str, ApiToken]:
        secret = secret or new_secret()
        row = ApiToken(
            token_id="tok_" + secrets.token_hex(8),
            name=name,
            token_hash=hash_token(secret),
            hint=secret[-4:],
            is_admin=admin,
            created_at=utcnow(),
        )
        async with self._db.sessions.begin() as session:
            session.add(row)
        return secret, row

    async def list(self, include_revoked: bool = False) -> list[ApiToken]:
        query = select(ApiToken).order_by(ApiToken.id)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        async with self._db.sessions() as session:
            return list((await session.scalars(query)).all())

    async def revoke(self, token_id_or_secret: str) -> bool:
        """Revoke by token id (``tok_...``) or by the token itself; False if none matched."""
        key = token_id_or_secret
        column = ApiToken.token_hash if key.startswith(TOKEN_PREFIX) else ApiToken.token_id
        value = hash_token(key) if key.startswith(TOKEN_PREFIX) else key
        async with self._db.sessions.begin() as session:
            row = await session.scalar(select(ApiToken).where(column == value, ApiToken.revoked_at.is_(None)))
            if row is None:
                return False
            row.revoked_at = utcnow()
            self._cache.pop(row.token_hash, None)
            self._revocations += 1
        return True

    async def count_active(self) -> int:
        async with self._db.sessions() as session:
            query = select(func.count()).select_from(ApiToken).where(ApiToken.revoked_at.is_(None))
            return int(await session.scalar(query) or 0)

    async def ensure_admin(self, preset: str | None = None) -> str | None:
        """Make the admin token when the database has none; return it (the only time it is shown)."""
        if preset is not None:
            async with self._db.sessions() as session:
                exists = await session.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(preset)))
            if exists is None:
                await self.create("admin", admin=True, secret=preset)
            return None
        if await self.count_active() > 0:
            return None
        secret, _ = await self.create("admin", admin=True)
        return secret

    async def verify(self, presented: str) -> TokenInfo | None:
        digest = hash_token(presented)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = self._lookups[digest] = asyncio.ensure_future(self._lookup(digest))
            lookup.add_done_callback(lambda _done: self._lookups.pop(digest, None))
        return await asyncio.shield(lookup)  # a caller that leaves does not cancel the others' lookup

    async def _lookup(self, digest: str) -> TokenInfo | None:
        cached = self._cache.get(digest)
        now, revocations = time.monotonic(), self._revocations
        try:
            async with self._db.sessions() as session:
                row = await session.scalar(
                    select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
                )
        except Exception as exc:  # noqa: BLE001 - the database is unreachable
            if cached is not None:  # a token verified before the outage keeps working through it
                log.warning("token check against the database failed (%s); using the last verification",
                            type(exc).__name__)
                return cached[0]
            raise ServiceUnavailable("cannot check API tokens right now (the database is unreachable)",
                                     retry_after=5) from None
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            self._cache.pop(digest, None)
            return None
        info = TokenInfo(token_id=row.token_id, name=row.name, is_admin=row.is_admin)
        if revocations == self._revocations:
            self._cache[digest] = (info, now + self._ttl)
        return info
