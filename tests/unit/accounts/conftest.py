import pytest

from inferd.accounts.db import Database


@pytest.fixture
async def db(tmp_path):
    """A fresh, migrated SQLite database."""
    database = Database(f"sqlite:///{tmp_path}/accounts.db")
    await database.migrate()
    yield database
    await database.close()
