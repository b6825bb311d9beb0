from pathlib import Path

from inferd.settings import Settings


def test_defaults_put_sqlite_in_the_data_dir():
    settings = Settings(_env_file=None)
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.resolved_database_url() == "sqlite+aiosqlite:///.inferd/inferd.db"


def test_environment_is_read_when_settings_are_built(monkeypatch):
    monkeypatch.setenv("INFERD_PORT", "9123")
    monkeypatch.setenv("INFERD_AUTH", "false")
    monkeypatch.setenv("INFERD_DATA_DIR", "/tmp/somewhere")
    settings = Settings()
    assert settings.port == 9123
    assert settings.auth is False
    assert settings.data_dir == Path("/tmp/somewhere")


def test_explicit_values_win_over_environment(monkeypatch):
    monkeypatch.setenv("INFERD_PORT", "9123")
    assert Settings(port=7000).port == 7000


def test_explicit_database_url_is_kept():
    assert Settings(database_url="postgresql://u@h/db").resolved_database_url() == "postgresql://u@h/db"
