"""API tokens: made random, stored as SHA-256 hashes, compared in constant time; each belongs to
an account, and may carry an expiry, the networks it may be used from, and its own limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from inferd.accounts.db import Database
from inferd.accounts.models import (
    ADMIN_ACCOUNT,
    DEFAULT_ACCOUNT,
    Account,
    ApiToken,
    aware,
    utcnow,
)
from inferd.errors import Conflict, ServiceUnavailable

log = logging.getLogger(__name__)

TOKEN_PREFIX = "inferd_"
_BY_ID = "id:"  # cache keys: a token's SHA-256 (hex), or this and its id
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Scope:
    """What a scoped token (``jwt:...``, accounts/scoped.py) narrows its parent token to."""

    scope_id: str  # the JWT's jti: usage rows made with it carry it, and its spending is their sum
    models: frozenset[str] | None  # catalog model ids; None: every model
    spending_limit_nano_usd: int | None

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a verified token may do; what a request's context carries."""

    token_id: str
    name: str
    account_id: str
    is_admin: bool = False
    account_disabled: bool = False
    expires_at: datetime | None = None
    networks: tuple[Network, ...] | None = None  # None: any address
    # limits set on the account and on the token itself; None: not set (the server's default
    # applies to the account); a token's own narrows its account's, never widens it
    account_rate_limit: int | None = None  # concurrent requests per model
    token_rate_limit: int | None = None
    account_tpm_rate_limit: int | None = None  # tokens per minute
    token_tpm_rate_limit: int | None = None
    spending_limit_nano_usd: int | None = None  # the account's, per calendar month (UTC)
    scope: Scope | None = None

    @property
    def rate_limit(self) -> int | None:
        return _tighter(self.token_rate_limit, self.account_rate_limit)

    @property
    def tpm_rate_limit(self) -> int | None:
        return _tighter(self.token_tpm_rate_limit, self.account_tpm_rate_limit)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    def allows(self, address: str | None) -> bool:
        if self.networks is None:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_networks(values: list[str] | None) -> tuple[Network, ...] | None:
    """CIDR strings ('10.0.0.0/8', '::1') -> networks; ValueError names the first bad one."""
    if values is None:
        return None
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR network: {value[:64]!r}") from None
    return tuple(networks)


def _tighter(*limits: int | None) -> int | None:
    """A token narrows its account's limit, never widens it."""
    set_ = [limit for limit in limits if limit is not None]
    return min(set_) if set_ else None


def _active_named(account_id: str, name: str):
    return select(ApiToken).where(ApiToken.account_id == account_id, ApiToken.name == name,
                                  ApiToken.revoked_at.is_(None))


def _lookup_column(key: str):
    """A token is named by its id (``tok_...``) or by itself."""
    if key.startswith(TOKEN_PREFIX):
        return ApiToken.token_hash, hash_token(key)
    return ApiToken.token_id, key


class TokenStore:
    """Tokens in the database, with a short in-process cache of verified ones.

    A token revoked (or an account disabled) from another process stops working within
    ``cache_ttl_s``; one revoked through this store stops at once. While the database is
    unreachable, tokens verified before keep working and unknown ones get a 503.

    Requests that present the same token while it is being looked up share that one lookup: when
    a busy token's cache entry expires, 640 requests in flight make one query, not 640 (each
    costs the event loop a millisecond or two of ORM work). Each lookup also records the token's
    last use (off the request's path), so ``last_used_at`` is exact to ``cache_ttl_s``.
    """

    def __init__(self, db: Database, cache_ttl_s: float = 5.0):
        self._db = db
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[TokenInfo, float]] = {}
        self._lookups: dict[str, asyncio.Future[TokenInfo | None]] = {}
        self._revocations = 0  # a lookup that began before a revocation does not cache its answer
        self._touches: set[asyncio.Task] = set()

    # --- accounts' fixed members

    async def ensure_account(self, account_id: str, name: str, *, admin: bool = False) -> None:
        try:
            async with self._db.sessions.begin() as session:
                if await session.scalar(select(Account.id).where(Account.account_id == account_id)) is None:
                    session.add(Account(account_id=account_id, name=name, is_admin=admin, created_at=utcnow()))
        except IntegrityError:  # another process starting at the same moment made it
            pass

    # --- tokens

    async def create(self, name: str, *, account_id: str | None = None, admin: bool = False,
                     secret: str | None = None, expires_at: datetime | None = None,
                     allowed_ips: list[str] | None = None, rate_limit: int | None = None,
                     tpm_rate_limit: int | None = None, unique_name: bool = False) -> tuple[str, ApiToken]:
        """A new token for ``account_id`` (the admin account with ``admin``; ``acc_default`` when
        neither is given). ``unique_name``: 409 when the account has an active token of that name."""
        if account_id is None:
            account_id = ADMIN_ACCOUNT if admin else DEFAULT_ACCOUNT
            await self.ensure_account(account_id, "admin" if admin else "default", admin=admin)
        if allowed_ips is not None:
            allowed_ips = [str(n) for n in parse_networks(allowed_ips)]
        secret = secret or new_secret()
        row = ApiToken(
            token_id="tok_" + secrets.token_hex(8),
            account_id=account_id,
            name=name,
            token_hash=hash_token(secret),
            hint=secret[-4:],
            created_at=utcnow(),
            expires_at=expires_at,
            allowed_ips=allowed_ips,
            rate_limit=rate_limit,
            tpm_rate_limit=tpm_rate_limit,
        )
        async with self._db.sessions.begin() as session:
            if unique_name and await session.scalar(_active_named(account_id, name)):
                raise Conflict(f"This account already has an API token named {name[:200]!r}")
            session.add(row)
        return secret, row

    async def list(self, include_revoked: bool = False, account_id: str | None = None) -> list[ApiToken]:
        query = select(ApiToken).order_by(ApiToken.id)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        if account_id is not None:
            query = query.where(ApiToken.account_id == account_id)
        async with self._db.sessions() as session:
            return list((await session.scalars(query)).all())

    async def get(self, key: str, include_revoked: bool = False) -> ApiToken | None:
        """An active token (or any, with ``include_revoked``) by its id (``tok_...``) or by itself."""
        column, value = _lookup_column(key)
        query = select(ApiToken).where(column == value)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        async with self._db.sessions() as session:
            return await session.scalar(query)

    async def by_name(self, account_id: str, name: str) -> ApiToken | None:
        async with self._db.sessions() as session:
            return await session.scalar(_active_named(account_id, name))

    async def revoke(self, token_id_or_secret: str) -> bool:
        """Revoke by token id (``tok_...``) or by the token itself; False if none matched."""
        column, value = _lookup_column(token_id_or_secret)
        async with self._db.sessions.begin() as session:
            row = await session.scalar(select(ApiToken).where(column == value, ApiToken.revoked_at.is_(None)))
            if row is None:
                return False
            row.revoked_at = utcnow()
            self._cache.pop(row.token_hash, None)
            self._cache.pop(_BY_ID + row.token_id, None)  # and the scoped tokens made from it
            self._revocations += 1
        return True

    def forget(self) -> None:
        """Drop every cached verification (an account was disabled or its limits changed): each
        token is looked up again on its next use."""
        self._cache.clear()
        self._revocations += 1

    async def count_active(self, account_id: str | None = None) -> int:
        query = select(func.count()).select_from(ApiToken).where(ApiToken.revoked_at.is_(None))
        if account_id is not None:
            query = query.where(ApiToken.account_id == account_id)
        async with self._db.sessions() as session:
            return int(await session.scalar(query) or 0)

    async def ensure_admin(self, preset: str | None = None) -> str | None:
        """Make the admin account, and an admin token when that account has none; return the
        token (the only time it is shown). ``preset`` becomes an admin token if it is not one."""
        await self.ensure_account(ADMIN_ACCOUNT, "admin", admin=True)
        if preset is not None:
            async with self._db.sessions() as session:
                exists = await session.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(preset)))
            if exists is None:
                try:
                    await self.create("admin", account_id=ADMIN_ACCOUNT, secret=preset)
                except IntegrityError:  # another process starting at the same moment made it
                    pass
            return None
        if await self.count_active(ADMIN_ACCOUNT) > 0:
            return None
        secret, _ = await self.create("admin", account_id=ADMIN_ACCOUNT)
        return secret

    # --- verification (the hot path)

    async def verify(self, presented: str) -> TokenInfo | None:
        return await self._verified(hash_token(presented))

    async def verify_id(self, token_id: str) -> TokenInfo | None:
        """The token with this id, if active (a scoped token's parent): cached the same way."""
        return await self._verified(_BY_ID + token_id)

    async def _verified(self, key: str) -> TokenInfo | None:
        cached = self._cache.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = self._lookups[key] = asyncio.ensure_future(self._lookup(key))
            lookup.add_done_callback(lambda _done: self._lookups.pop(key, None))
        return await asyncio.shield(lookup)  # a caller that leaves does not cancel the others' lookup

    async def _lookup(self, key: str) -> TokenInfo | None:
        cached = self._cache.get(key)
        now, revocations = time.monotonic(), self._revocations
        by_id = key.startswith(_BY_ID)
        match = ApiToken.token_id == key[len(_BY_ID):] if by_id else ApiToken.token_hash == key
        try:
            async with self._db.sessions() as session:
                found = (await session.execute(
                    select(ApiToken, Account)
                    .join(Account, Account.account_id == ApiToken.account_id)
                    .where(match, ApiToken.revoked_at.is_(None))
                )).first()
        except Exception as exc:  # noqa: BLE001 - the database is unreachable
            if cached is not None:  # a token verified before the outage keeps working through it
                log.warning("token check against the database failed (%s); using the last verification",
                            type(exc).__name__)
                return cached[0]
            raise ServiceUnavailable("cannot check API tokens right now (the database is unreachable)",
                                     retry_after=5) from None
        if found is None or not (by_id or hmac.compare_digest(found[0].token_hash, key)):
            self._cache.pop(key, None)
            return None
        token, account = found
        info = TokenInfo(
            token_id=token.token_id, name=token.name, account_id=account.account_id, is_admin=account.is_admin,
            account_disabled=account.disabled_at is not None, expires_at=aware(token.expires_at),
            networks=parse_networks(token.allowed_ips),
            account_rate_limit=account.rate_limit, token_rate_limit=token.rate_limit,
            account_tpm_rate_limit=account.tpm_rate_limit, token_tpm_rate_limit=token.tpm_rate_limit,
            spending_limit_nano_usd=account.spending_limit_nano_usd,
        )
        if revocations == self._revocations:
            self._cache[key] = (info, now + self._ttl)
        self._touch(token.id)
        return info

    def _touch(self, row_id: int) -> None:
        async def touch():
            try:
                async with self._db.sessions.begin() as session:
                    await session.execute(update(ApiToken).where(ApiToken.id == row_id).values(last_used_at=utcnow()))
            except Exception as exc:  # noqa: BLE001 - last use is a convenience, never a failure
                log.debug("recording a token's last use failed: %s", exc)

        task = asyncio.get_running_loop().create_task(touch())
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def settle(self) -> None:
        """Wait for last-use writes in flight (at shutdown, and in tests)."""
        if self._touches:
            await asyncio.gather(*self._touches, return_exceptions=True)
