"""Usage records keyed by the server's request id; the client's X-Request-ID kept as a label.

Before this revision a client's X-Request-ID became the request id, so ids could repeat: the
older rows of a repeated id get their row number appended, then request_id becomes unique
(a journal replay after an outage inserts each row once).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.alter_column("request_id", type_=sa.String(96), existing_type=sa.String(64), existing_nullable=False)
        batch.add_column(sa.Column("client_request_id", sa.String(64), nullable=True))
    op.execute(
        "UPDATE usage_records SET request_id = request_id || '~' || CAST(id AS VARCHAR(20)) "
        "WHERE id NOT IN (SELECT MIN(id) FROM usage_records GROUP BY request_id)"
    )
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ix_usage_records_request_id")
        batch.create_index("ix_usage_records_request_id", ["request_id"], unique=True)
        batch.create_index("ix_usage_records_client_request_id", ["client_request_id"])


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ix_usage_records_client_request_id")
        batch.drop_index("ix_usage_records_request_id")
        batch.create_index("ix_usage_records_request_id", ["request_id"])
        batch.drop_column("client_request_id")
