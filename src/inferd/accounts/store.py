"""Accounts: who owns tokens and usage, and the limits each one has.

The admin account (``acc_admin``, made on first start) manages every account; the others are
made by it (``POST /v1/accounts``, ``inferd accounts create``). An account is disabled, never
deleted: its usage rows are its bill, and they stay.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import func, select

from inferd.accounts.db import Database
from inferd.accounts.models import ADMIN_ACCOUNT, Account, ApiToken, utcnow
from inferd.accounts.tokens import TokenStore
from inferd.errors import Conflict, NotFound

UNSET = object()  # a field a PATCH did not send (None means "clear it")


@dataclass(slots=True)
class NewAccount:
    account: Account
    token: str  # the first token, shown once
    token_row: ApiToken


class AccountStore:
    def __init__(self, db: Database, tokens: TokenStore):
        self._db = db
        self._tokens = tokens

    async def create(self, name: str, *, rate_limit: int | None = None, tpm_rate_limit: int | None = None,
                     spending_limit_nano_usd: int | None = None) -> NewAccount:
        """A new account and its first token (named ``default``)."""
        account = Account(account_id="acc_" + secrets.token_hex(8), name=name, is_admin=False, created_at=utcnow(),
                          rate_limit=rate_limit, tpm_rate_limit=tpm_rate_limit,
                          spending_limit_nano_usd=spending_limit_nano_usd)
        async with self._db.sessions.begin() as session:
            session.add(account)
        secret, row = await self._tokens.create("default", account_id=account.account_id)
        return NewAccount(account, secret, row)

    async def list(self) -> list[tuple[Account, int]]:
        """Every account with its number of active tokens, oldest first."""
        active = (select(ApiToken.account_id, func.count().label("n")).where(ApiToken.revoked_at.is_(None))
                  .group_by(ApiToken.account_id).subquery())
        query = (select(Account, func.coalesce(active.c.n, 0))
                 .outerjoin(active, active.c.account_id == Account.account_id).order_by(Account.id))
        async with self._db.sessions() as session:
            return [(account, int(n)) for account, n in (await session.execute(query)).all()]

    async def get(self, account_id: str) -> Account:
        async with self._db.sessions() as session:
            account = await session.scalar(select(Account).where(Account.account_id == account_id))
        if account is None:
            raise NotFound(f"No account {account_id[:64]!r}")
        return account

    async def update(self, account_id: str, *, name=UNSET, disabled=UNSET, rate_limit=UNSET, tpm_rate_limit=UNSET,
                     spending_limit_nano_usd=UNSET) -> Account:
        """Change what was given; disabling (or changing the limits of) an account takes effect at
        once on this process and within ``token_cache_ttl_s`` on the others."""
        async with self._db.sessions.begin() as session:
            account = await session.scalar(select(Account).where(Account.account_id == account_id))
            if account is None:
                raise NotFound(f"No account {account_id[:64]!r}")
            if disabled is not UNSET and disabled and account.account_id == ADMIN_ACCOUNT:
                raise Conflict("The admin account cannot be disabled")
            if name is not UNSET:
                account.name = name
            if disabled is not UNSET:
                account.disabled_at = (account.disabled_at or utcnow()) if disabled else None
            for field, value in (("rate_limit", rate_limit), ("tpm_rate_limit", tpm_rate_limit),
                                 ("spending_limit_nano_usd", spending_limit_nano_usd)):
                if value is not UNSET:
                    setattr(account, field, value)
        self._tokens.forget()
        return account
