"""Tokens per minute shared by the processes on one database: what each process's requests
consumed per key in 5-second buckets (accounts/limits.py: SharedTokensPerMinute).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_tokens",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("holder", sa.String(32), primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True, index=True),
        sa.Column("tokens", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_tokens")
