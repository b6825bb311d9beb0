"""Alembic environment: runs on the connection inferd hands it (see accounts/db.py)."""

from alembic import context

from inferd.accounts.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
