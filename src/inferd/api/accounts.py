"""DeepInfra's token, account and billing routes: ``/v1/api-tokens``, ``/v1/me``,
``/v1/request-costs``, ``/payment/usage``, and inferd's admin-only ``/v1/accounts`` (DeepInfra
makes accounts at sign-up; a self-hosted server makes them here). The rules of who sees what
are in serving/tenancy.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from inferd.api.deps import admin, authenticated
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import PLATFORM, dialect_route
from inferd.api.state import AppState, app_state
from inferd.protocol.platform import (
    AccountIn,
    AccountOut,
    AccountPatch,
    ApiTokenIn,
    ApiTokenOut,
    NewAccountOut,
    RateLimitOut,
    RequestCostsIn,
    RequestCostsOut,
    ScopedJWTIn,
    ScopedJWTInfo,
    ScopedJWTOut,
)
from inferd.serving.context import RequestContext

router = APIRouter(route_class=dialect_route(PLATFORM))
AccountQuery = Query(None, max_length=64, description="admin tokens only: act on this account")


@router.get("/v1/api-tokens", response_model=list[ApiTokenOut], tags=["API tokens"])
async def list_tokens(account_id: str | None = AccountQuery, ctx: RequestContext = Depends(authenticated),
                      state: AppState = Depends(app_state)):
    """The account's active API tokens (the tokens themselves are never shown again: their last characters)."""
    return FastJSONResponse(await state.tenancy.list_tokens(ctx, account_id))


@router.post("/v1/api-tokens", response_model=ApiTokenOut, tags=["API tokens"])
async def create_token(body: ApiTokenIn, account_id: str | None = AccountQuery,
                       ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """A new API token for the account; `token` is shown only in this answer."""
    return FastJSONResponse(await state.tenancy.create_token(ctx, body, account_id))


@router.get("/v1/api-tokens/{api_token}", response_model=ApiTokenOut, tags=["API tokens"])
async def get_token(api_token: str, ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """One token, named by its `token_id` or by the token itself."""
    return FastJSONResponse(await state.tenancy.get_token(ctx, api_token))


@router.delete("/v1/api-tokens/{api_token}", tags=["API tokens"])
async def delete_token(api_token: str, ctx: RequestContext = Depends(authenticated),
                       state: AppState = Depends(app_state)):
    """Revoke a token: refused at once here, within `token_cache_ttl_s` on other processes."""
    return FastJSONResponse(await state.tenancy.delete_token(ctx, api_token))


@router.get("/v1/me", tags=["Me"])
async def me(ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """The caller: its account, token, whether it is the admin, and its limits."""
    return FastJSONResponse(state.tenancy.me(ctx))


@router.get("/v1/me/rate_limit", response_model=RateLimitOut, tags=["Me"])
async def rate_limit(ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """Concurrent requests per model, and tokens per minute, this token may use."""
    return FastJSONResponse(state.tenancy.rate_limit(ctx))


@router.post("/v1/accounts", response_model=NewAccountOut, tags=["Accounts (admin)"])
async def create_account(body: AccountIn, _: RequestContext = Depends(admin), state: AppState = Depends(app_state)):
    """A new account and its first API token (shown only in this answer)."""
    return FastJSONResponse(await state.tenancy.create_account(body))


@router.get("/v1/accounts", response_model=list[AccountOut], tags=["Accounts (admin)"])
async def list_accounts(_: RequestContext = Depends(admin), state: AppState = Depends(app_state)):
    return FastJSONResponse(await state.tenancy.list_accounts())


@router.get("/v1/accounts/{account_id}", response_model=AccountOut, tags=["Accounts (admin)"])
async def get_account(account_id: str, _: RequestContext = Depends(admin), state: AppState = Depends(app_state)):
    return FastJSONResponse(await state.tenancy.get_account(account_id))


@router.patch("/v1/accounts/{account_id}", response_model=AccountOut, tags=["Accounts (admin)"])
async def patch_account(account_id: str, body: AccountPatch, _: RequestContext = Depends(admin),
                        state: AppState = Depends(app_state)):
    """Rename, disable or enable (`disabled`), or change limits; `null` clears a limit."""
    return FastJSONResponse(await state.tenancy.patch_account(account_id, body))


@router.delete("/v1/accounts/{account_id}", response_model=AccountOut, tags=["Accounts (admin)"])
async def disable_account(account_id: str, _: RequestContext = Depends(admin), state: AppState = Depends(app_state)):
    """Disable the account: its tokens stop working; its usage (its bill) stays."""
    return FastJSONResponse(await state.tenancy.disable_account(account_id))


@router.post("/v1/request-costs", response_model=RequestCostsOut, tags=["Billing"])
async def request_costs(body: RequestCostsIn, ctx: RequestContext = Depends(authenticated),
                        state: AppState = Depends(app_state)):
    """What each of the account's requests cost, in integer nano-dollars (ids it does not know are left out)."""
    return FastJSONResponse(await state.tenancy.request_costs(ctx, body.requestIds))


@router.get("/payment/usage", tags=["Billing"])
async def usage(from_: str = Query(alias="from", max_length=32,
                                   description="YYYY.MM, current, current-N, or unix seconds (UTC)"),
                to: str | None = Query(None, max_length=32, description="same forms; unset: the month `from` names"),
                account_id: str | None = AccountQuery, ctx: RequestContext = Depends(authenticated),
                state: AppState = Depends(app_state)):
    """The account's bill per month: items per model (units, rate and cost in cents) and the total."""
    return FastJSONResponse(await state.tenancy.bill(ctx, from_, to, account_id))


@router.get("/payment/usage/{api_token}", tags=["Billing"])
async def token_usage(api_token: str, from_: str = Query(alias="from", max_length=32),
                      to: str | None = Query(None, max_length=32), ctx: RequestContext = Depends(authenticated),
                      state: AppState = Depends(app_state)):
    """The bill of one of the account's tokens (by `token_id` or the token itself)."""
    return FastJSONResponse(await state.tenancy.bill(ctx, from_, to, token=api_token))


@router.post("/v1/scoped-jwt", response_model=ScopedJWTOut, tags=["API tokens"])
async def create_scoped_jwt(body: ScopedJWTIn, account_id: str | None = AccountQuery,
                            ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """A scoped token (`jwt:...`) made from one of the account's tokens (`api_key_name`): only
    `models`, until `expires_at` / `expires_delta` (default a year), up to `spending_limit` USD.
    Revoking the token it was made from ends it too."""
    return FastJSONResponse(await state.tenancy.create_scoped(ctx, body, account_id))


@router.get("/v1/scoped-jwt", response_model=ScopedJWTInfo, tags=["API tokens"])
async def inspect_scoped_jwt(jwtoken: str = Query(max_length=16384), ctx: RequestContext = Depends(authenticated),
                             state: AppState = Depends(app_state)):
    """What a scoped token of the account allows, and what it has spent."""
    return FastJSONResponse(await state.tenancy.inspect_scoped(ctx, jwtoken))
