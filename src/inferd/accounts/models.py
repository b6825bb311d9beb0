"""Tables: accounts, the API tokens they own, and usage records.

Money is stored as integer nano-dollars (``cost_nano_usd``: 1 USD = 10**9), never a float.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ADMIN_ACCOUNT = "acc_admin"  # made on first start; its tokens manage every account
DEFAULT_ACCOUNT = "acc_default"  # owns tokens made with `inferd tokens create` and no --account


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """A stored time as UTC (SQLite hands back naive datetimes)."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # limits; NULL = the server's default (settings)
    rate_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)  # concurrent requests per model
    tpm_rate_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)  # tokens per minute
    spending_limit_nano_usd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # per calendar month


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    allowed_ips: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # CIDR networks; NULL = anywhere
    rate_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_rate_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)


class UsageRecord(Base):
    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(96), unique=True, index=True)
    client_request_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    account_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    token_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    scope_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)  # a scoped token's jti
    model: Mapped[str] = mapped_column(String(300))
    version: Mapped[str] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(64))
    pricing_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[float] = mapped_column(Float, default=0.0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    input_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    input_characters: Mapped[int] = mapped_column(Integer, default=0)
    cost_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    runtime_ms: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class SigningKey(Base):
    """The HMAC key scoped tokens are signed with, made on first start; in the database so every
    process sharing it verifies every other's tokens."""

    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kid: Mapped[str] = mapped_column(String(32), unique=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RateHold(Base):
    """Concurrency slots one process holds for one key (accounts/limits.py: SharedSlots)."""

    __tablename__ = "rate_holds"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    holder: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class RateTokens(Base):
    """Tokens one process's requests consumed for one key in one 5-second bucket
    (accounts/limits.py: SharedTokensPerMinute)."""

    __tablename__ = "rate_tokens"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    holder: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    tokens: Mapped[int] = mapped_column(BigInteger)


class Deployment(Base):
    """A model an account deployed over the API (deployments/): one version of ``model_name``.
    ``config`` holds the catalog entry's fields it was made with (limits, options, scaling...)."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deploy_id: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    task: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(1200))
    config: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # initializing, deploying, deployed, failed, stopped, deleted
    fail_reason: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LoraAdapter(Base):
    """A LoRA adapter an account made on a base model (``POST /v1/lora/create``); served as a
    model named ``lora_name`` (also ``BASE:LORA_NAME``) in the base model's batches."""

    __tablename__ = "lora_adapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lora_id: Mapped[str] = mapped_column(String(32), unique=True)
    lora_name: Mapped[str] = mapped_column(String(200), index=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    base_model: Mapped[str] = mapped_column(String(300))
    source: Mapped[str] = mapped_column(String(1200))
    config: Mapped[dict] = mapped_column(JSON)  # rank, alpha, target modules; private; description
    status: Mapped[str] = mapped_column(String(16))  # deploying, deployed, failed, deleted
    fail_reason: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
