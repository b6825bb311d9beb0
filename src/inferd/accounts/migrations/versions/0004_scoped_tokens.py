"""Scoped tokens: the key they are signed with (shared by every process on the database), and
the scoped token each usage row was made with (its spending is summed per scope); rate-limit
slots held by each process (accounts/limits.py: SharedSlots).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kid", sa.String(32), nullable=False, unique=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("scope_id", sa.String(32), nullable=True))
        batch.create_index("ix_usage_records_scope_id", ["scope_id"])
    op.create_table(
        "rate_holds",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("holder", sa.String(32), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("rate_holds")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ix_usage_records_scope_id")
        batch.drop_column("scope_id")
    op.drop_table("signing_keys")
