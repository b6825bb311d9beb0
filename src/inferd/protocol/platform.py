"""DeepInfra's platform wire models: API tokens, accounts (inferd's own, admin-only), ``/v1/me``.

Bodies that change rights refuse unknown fields (a misspelt ``allowed_ips`` must not make a
token that works from anywhere). Times are unix seconds, as DeepInfra's ``ApiToken.created_at``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

TEN_YEARS_S = 10 * 365 * 86400
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Network = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Limit = Annotated[int, Field(ge=1, le=1_000_000_000)]
Usd = Annotated[Decimal, Field(ge=0, le=10**9, allow_inf_nan=False, decimal_places=9)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiTokenIn(_Strict):
    name: Name
    expires_delta: int | None = Field(None, ge=1, le=TEN_YEARS_S, description="seconds from now")
    expires_at: int | None = Field(None, ge=0, le=2**37, description="unix seconds")
    allowed_ips: list[Network] | None = Field(
        None, max_length=64, description="CIDR networks (or addresses) the token may be used from; unset: anywhere"
    )
    rate_limit: Limit | None = Field(None, description="concurrent requests per model (never above the account's)")
    tpm_rate_limit: Limit | None = Field(None, description="tokens per minute (never above the account's)")


class ApiTokenOut(BaseModel):
    token: str = Field(description="the token itself when it is made; afterwards its last characters only")
    token_id: str
    name: str
    created_at: int
    expires_at: int | None = None
    last_used_at: int | None = None
    allowed_ips: list[str] | None = None
    rate_limit: int | None = None
    tpm_rate_limit: int | None = None


class AccountIn(_Strict):
    name: Name
    rate_limit: Limit | None = None
    tpm_rate_limit: Limit | None = None
    spending_limit: Usd | None = Field(None, description="USD per calendar month; unset: no limit")


class AccountPatch(_Strict):
    """Only the fields sent change; ``null`` clears a limit."""

    name: Name | None = None
    disabled: bool | None = None
    rate_limit: Limit | None = None
    tpm_rate_limit: Limit | None = None
    spending_limit: Usd | None = None


class AccountOut(BaseModel):
    account_id: str
    name: str
    is_admin: bool
    created_at: int
    disabled: bool
    disabled_at: int | None = None
    rate_limit: int | None = None
    tpm_rate_limit: int | None = None
    spending_limit: float | None = Field(None, description="USD per calendar month")
    active_tokens: int | None = None


class NewAccountOut(AccountOut):
    token: str = Field(description="the account's first API token, shown only this once")
    token_id: str


class RateLimitOut(BaseModel):
    rate_limit: int = Field(description="concurrent requests per model")
    tpm_rate_limit: int | None = Field(None, description="tokens per minute; null: no limit")


class RequestCostsIn(_Strict):
    requestIds: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        max_length=1000, description="request ids (X-Request-ID, request_id, or a response id such as chatcmpl-...)"
    )


class RequestCost(BaseModel):
    requestId: str
    costNanoUsd: int


class RequestCostsOut(BaseModel):
    requests: list[RequestCost]


class ScopedJWTIn(_Strict):
    """DeepInfra's ``ScopedJWTIn`` (its reference names the parent token `api_key_name`, its
    OpenAPI description `api_token_name`: both are taken)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    api_key_name: Name = Field(validation_alias=AliasChoices("api_key_name", "api_token_name"),
                               description="the name of the account's token the scoped token is made from")
    models: list[Annotated[str, StringConstraints(min_length=1, max_length=300)]] | None = Field(
        None, max_length=100, description="the models it may call; unset: every model")
    expires_delta: int | None = Field(None, ge=1, le=TEN_YEARS_S, description="seconds from now (default: a year)")
    expires_at: int | None = Field(None, ge=0, le=2**37, description="unix seconds")
    spending_limit: Usd | None = Field(None, description="USD it may spend; unset: no limit of its own")


class ScopedJWTOut(BaseModel):
    token: str


class ScopedJWTInfo(BaseModel):
    expires_at: int
    models: list[str] | None = None
    spending_limit: float | None = None
    spent: float = Field(description="USD spent with it so far")
    api_key_name: str
    token_id: str
