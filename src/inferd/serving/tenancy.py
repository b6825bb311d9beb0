"""Accounts, API tokens and ``/v1/me``: who may see and change what.

A token acts for its account: it lists, makes and revokes that account's tokens and nothing
else (another account's token is a 403). Admin tokens (those of the admin account) may name
any account (``?account_id=``) and manage accounts. With authentication off (``--no-auth``)
every caller acts as the admin account.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from inferd.accounts import billing
from inferd.accounts.db import Database
from inferd.accounts.limits import Limits
from inferd.accounts.models import ADMIN_ACCOUNT, Account, ApiToken, aware, utcnow
from inferd.accounts.scoped import JWT_PREFIX, ScopedTokens
from inferd.accounts.store import UNSET, AccountStore
from inferd.accounts.tokens import TOKEN_PREFIX, TokenStore, parse_networks
from inferd.accounts.usage import UsageRecorder
from inferd.catalog import Catalog
from inferd.catalog.pricing import nano_to_usd, usd_to_nano
from inferd.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from inferd.protocol.platform import AccountIn, AccountPatch, ApiTokenIn, ScopedJWTIn
from inferd.serving.context import RequestContext


def unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(aware(moment).timestamp())


def expiry(delta: int | None, at: int | None) -> datetime | None:
    """When a token made now expires: ``expires_delta`` seconds from now, or at ``expires_at``."""
    if delta is not None and at is not None:
        raise InvalidRequest("Send `expires_delta` or `expires_at`, not both", param="expires_at")
    if delta is not None:
        return utcnow() + timedelta(seconds=delta)
    if at is not None:
        moment = datetime.fromtimestamp(at, UTC)
        if moment <= utcnow():
            raise InvalidRequest("`expires_at` is in the past", param="expires_at")
        return moment
    return None


def token_out(row: ApiToken, secret: str | None = None) -> dict:
    return {
        "token": secret or f"{TOKEN_PREFIX}…{row.hint}",
        "token_id": row.token_id,
        "name": row.name,
        "created_at": unix(row.created_at),
        "expires_at": unix(row.expires_at),
        "last_used_at": unix(row.last_used_at),
        "allowed_ips": row.allowed_ips,
        "rate_limit": row.rate_limit,
        "tpm_rate_limit": row.tpm_rate_limit,
    }


def account_out(account: Account, active_tokens: int | None = None) -> dict:
    return {
        "account_id": account.account_id,
        "name": account.name,
        "is_admin": account.is_admin,
        "created_at": unix(account.created_at),
        "disabled": account.disabled_at is not None,
        "disabled_at": unix(account.disabled_at),
        "rate_limit": account.rate_limit,
        "tpm_rate_limit": account.tpm_rate_limit,
        "spending_limit": nano_to_usd(account.spending_limit_nano_usd),
        "active_tokens": active_tokens,
    }


def unscoped(ctx: RequestContext) -> None:
    """A scoped token calls models; it manages nothing (tokens, bills, accounts)."""
    if ctx.token is not None and ctx.token.scope is not None:
        raise Forbidden("A scoped token can only call models")


def caller(ctx: RequestContext) -> tuple[str, bool]:
    """(the account a request acts for, whether it is the admin's)."""
    if ctx.token is None:  # authentication is off
        return ADMIN_ACCOUNT, True
    return ctx.token.account_id, ctx.token.is_admin


class Tenancy:
    def __init__(self, db: Database, tokens: TokenStore, scoped: ScopedTokens, accounts: AccountStore,
                 usage: UsageRecorder, catalog: Catalog, limits: Limits):
        self.db = db
        self.limits = limits
        self.tokens = tokens
        self.scoped = scoped
        self.accounts = accounts
        self.usage = usage
        self.catalog = catalog

    def acting_for(self, ctx: RequestContext, account_id: str | None) -> str:
        """The account a call works on: the caller's own, or (admins only) the one named."""
        unscoped(ctx)
        own, admin = caller(ctx)
        if account_id is None or account_id == own:
            return own
        if not admin:
            raise Forbidden("A token can only manage its own account")
        return account_id

    # --- API tokens

    async def create_token(self, ctx: RequestContext, body: ApiTokenIn, account_id: str | None = None) -> dict:
        account = self.acting_for(ctx, account_id)
        if account != caller(ctx)[0]:
            await self.accounts.get(account)  # 404 for an admin naming an account that does not exist
        expires = expiry(body.expires_delta, body.expires_at)
        try:
            parse_networks(body.allowed_ips)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="allowed_ips") from None
        secret, row = await self.tokens.create(
            body.name, account_id=account, expires_at=expires, allowed_ips=body.allowed_ips,
            rate_limit=body.rate_limit, tpm_rate_limit=body.tpm_rate_limit, unique_name=True,
        )
        return token_out(row, secret)

    async def list_tokens(self, ctx: RequestContext, account_id: str | None = None) -> list[dict]:
        return [token_out(row) for row in await self.tokens.list(account_id=self.acting_for(ctx, account_id))]

    async def _owned_token(self, ctx: RequestContext, key: str, include_revoked: bool = False) -> ApiToken:
        unscoped(ctx)
        row = await self.tokens.get(key, include_revoked=include_revoked) if len(key) <= 512 else None
        if row is None:
            raise NotFound("No such API token (name it by its token_id or by the token itself)")
        own, admin = caller(ctx)
        if row.account_id != own and not admin:
            raise Forbidden("This API token belongs to another account")
        return row

    async def get_token(self, ctx: RequestContext, key: str) -> dict:
        row = await self._owned_token(ctx, key)
        return token_out(row, key if key.startswith(TOKEN_PREFIX) else None)

    async def delete_token(self, ctx: RequestContext, key: str) -> dict:
        row = await self._owned_token(ctx, key)
        await self.tokens.revoke(row.token_id)
        return {}

    # --- the caller

    def me(self, ctx: RequestContext) -> dict:
        account_id, admin = caller(ctx)
        token = ctx.token
        name = token.name if token else "admin"
        # DeepInfra's `Me`: fields of a hosted sign-up (email, picture, country...) have no value here
        return {
            "uid": account_id,
            "account_id": account_id,
            "token_id": token.token_id if token else None,
            "token_name": name,
            "name": name,
            "display_name": name,
            "is_admin": admin,
            "email": None,
            "email_verified": False,
            "account_setup": True,
            "provider": "inferd",
            "picture": None,
            "first_name": None,
            "last_name": None,
            "country": None,
            "is_business_account": False,
            "company": None,
            "website": None,
            "title": None,
            **self.rate_limit(ctx),
        }

    def rate_limit(self, ctx: RequestContext) -> dict:
        rate, tpm = self.limits.applying(ctx.token)
        return {"rate_limit": rate, "tpm_rate_limit": tpm}

    # --- accounts (admin only: the route says so)

    async def create_account(self, body: AccountIn) -> dict:
        made = await self.accounts.create(body.name, rate_limit=body.rate_limit, tpm_rate_limit=body.tpm_rate_limit,
                                          spending_limit_nano_usd=usd_to_nano(body.spending_limit))
        return {**account_out(made.account, 1), "token": made.token, "token_id": made.token_row.token_id}

    async def list_accounts(self) -> list[dict]:
        return [account_out(account, active) for account, active in await self.accounts.list()]

    async def get_account(self, account_id: str) -> dict:
        return account_out(await self.accounts.get(account_id))

    async def patch_account(self, account_id: str, body: AccountPatch) -> dict:
        sent = body.model_fields_set
        changes = {field: getattr(body, field) for field in ("name", "disabled", "rate_limit", "tpm_rate_limit")
                   if field in sent}
        if changes.get("name", UNSET) is None:
            raise InvalidRequest("`name` cannot be null", param="name")
        if "disabled" in changes and changes["disabled"] is None:
            raise InvalidRequest("`disabled` must be true or false", param="disabled")
        if "spending_limit" in sent:
            changes["spending_limit_nano_usd"] = usd_to_nano(body.spending_limit)
        return account_out(await self.accounts.update(account_id, **changes))

    async def disable_account(self, account_id: str) -> dict:
        return account_out(await self.accounts.update(account_id, disabled=True))

    # --- money

    async def request_costs(self, ctx: RequestContext, request_ids: list[str]) -> dict:
        """What each request cost (integer nano-dollars), from the stored rows; this process's rows
        still in the recorder's buffer are written first, so a request just answered is found."""
        unscoped(ctx)
        await self.usage.flush()
        account, admin = caller(ctx)
        found = await billing.request_costs(self.db, request_ids, None if admin else account)
        return {"requests": found}

    async def bill(self, ctx: RequestContext, fr: str, to: str | None, account_id: str | None = None,
                   token: str | None = None) -> dict:
        """DeepInfra's ``UsageOut`` for the caller's account (an admin may name another), or one of
        its tokens."""
        if token is not None:
            row = await self._owned_token(ctx, token, include_revoked=True)  # revoked tokens have bills too
            account, token_id = row.account_id, row.token_id
        else:
            account, token_id = self.acting_for(ctx, account_id), None
        owner = await self.accounts.get(account)
        await self.usage.flush()
        start = billing.parse_period(fr, param="from")
        end = billing.parse_period(to, param="to") if to else None
        created = aware(owner.created_at)
        return await billing.bill(self.db, start=start, end=end, account_id=account, token_id=token_id,
                                  initial_month=f"{created.year:04d}.{created.month:02d}")

    # --- scoped tokens

    async def create_scoped(self, ctx: RequestContext, body: ScopedJWTIn, account_id: str | None = None) -> dict:
        account = self.acting_for(ctx, account_id)
        parent = await self.tokens.by_name(account, body.api_key_name)
        if parent is None:
            raise NotFound(f"This account has no active API token named {body.api_key_name!r}")
        models = None
        if body.models is not None:  # ids or aliases -> the catalog's ids (404 for an unknown one)
            models = list(dict.fromkeys(self.catalog.resolve(name, viewer=ctx.viewer).spec.id for name in body.models))
        expires = expiry(body.expires_delta, body.expires_at) or utcnow() + timedelta(days=365)
        if parent.expires_at is not None:
            expires = min(expires, aware(parent.expires_at))
        token, _ = self.scoped.mint(parent, models=models, expires_at=expires,
                                    spending_limit_nano_usd=usd_to_nano(body.spending_limit))
        return {"token": token}

    async def inspect_scoped(self, ctx: RequestContext, jwtoken: str) -> dict:
        unscoped(ctx)
        if not jwtoken.startswith(JWT_PREFIX):
            raise InvalidRequest("`jwtoken` is not a scoped token (jwt:...)", param="jwtoken")
        try:
            claims = await self.scoped.claims(jwtoken)
        except Unauthorized as exc:  # what is wrong with it is the answer here
            raise InvalidRequest(exc.message, param="jwtoken") from None
        own, admin = caller(ctx)
        if claims["acc"] != own and not admin:
            raise Forbidden("This scoped token belongs to another account")
        parent = await self.tokens.get(claims["sub"], include_revoked=True)
        await self.usage.flush()
        return {
            "expires_at": claims["exp"],
            "models": claims.get("models"),
            "spending_limit": nano_to_usd(claims.get("spend")),
            "spent": nano_to_usd(await billing.spent(self.db, scope_id=claims["jti"])),
            "api_key_name": parent.name if parent else "",
            "token_id": claims["sub"],
        }
