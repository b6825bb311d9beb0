import pytest

from inferd.accounts.db import Database


@pytest.fixture
async def db(blank_db_url):
    """A fresh, migrated database: every accounts test runs on SQLite and on PostgreSQL."""
    database = Database(blank_db_url)
    await database.migrate()
    yield database
    await database.close()
