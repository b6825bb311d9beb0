"""Accounts own tokens and usage; token expiry, last use, allowed networks and limits; money as
integer nano-dollars.

Existing tokens move into two accounts: admin tokens into the admin account (``acc_admin``),
the others into ``acc_default``; usage rows take their token's account. ``cost_cents`` (a float)
becomes ``cost_nano_usd`` (an integer, rounded to the nano-dollar).

Revision ID: 0003
Revises: 0002
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rate_limit", sa.Integer, nullable=True),
        sa.Column("tpm_rate_limit", sa.Integer, nullable=True),
        sa.Column("spending_limit_nano_usd", sa.BigInteger, nullable=True),
    )
    bind = op.get_bind()
    now = datetime.now(UTC)
    for account_id, name, admin in (("acc_admin", "admin", True), ("acc_default", "default", False)):
        bind.execute(
            sa.text("INSERT INTO accounts (account_id, name, is_admin, created_at) "
                    "SELECT :account_id, :name, :admin, :now WHERE EXISTS "
                    "(SELECT 1 FROM api_tokens WHERE is_admin = :admin)"),
            {"account_id": account_id, "name": name, "admin": admin, "now": now},
        )

    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("account_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("allowed_ips", sa.JSON, nullable=True))
        batch.add_column(sa.Column("rate_limit", sa.Integer, nullable=True))
        batch.add_column(sa.Column("tpm_rate_limit", sa.Integer, nullable=True))
    bind.execute(sa.text("UPDATE api_tokens SET account_id = 'acc_admin' WHERE is_admin = :yes"), {"yes": True})
    bind.execute(sa.text("UPDATE api_tokens SET account_id = 'acc_default' WHERE is_admin = :no"), {"no": False})
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("account_id", existing_type=sa.String(32), nullable=False)
        batch.create_index("ix_api_tokens_account_id", ["account_id"])
        batch.drop_column("is_admin")

    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("account_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("pricing_type", sa.String(16), nullable=True))
        batch.add_column(sa.Column("cached_input_tokens", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("input_seconds", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("cost_nano_usd", sa.BigInteger, nullable=False, server_default="0"))
    bind.execute(sa.text(
        "UPDATE usage_records SET cost_nano_usd = CAST(ROUND(cost_cents * 10000000) AS BIGINT), "
        "account_id = (SELECT api_tokens.account_id FROM api_tokens WHERE api_tokens.token_id = usage_records.token_id)"
    ))
    with op.batch_alter_table("usage_records") as batch:
        batch.create_index("ix_usage_records_account_id", ["account_id"])
        batch.drop_column("cost_cents")


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("cost_cents", sa.Float, nullable=False, server_default="0"))
    op.execute("UPDATE usage_records SET cost_cents = cost_nano_usd / 10000000.0")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ix_usage_records_account_id")
        for column in ("cost_nano_usd", "input_seconds", "cached_input_tokens", "pricing_type", "account_id"):
            batch.drop_column(column)
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()))
    op.execute("UPDATE api_tokens SET is_admin = (account_id = 'acc_admin')")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_index("ix_api_tokens_account_id")
        for column in ("tpm_rate_limit", "rate_limit", "allowed_ips", "last_used_at", "expires_at", "account_id"):
            batch.drop_column(column)
    op.drop_table("accounts")
