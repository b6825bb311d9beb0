"""What a deployment may name: its weights' source, checked before anything is stored or fetched."""

from __future__ import annotations

import pytest

from inferd.catalog.sources import SourceError
from inferd.deployments import manager
from inferd.errors import Forbidden, InvalidRequest
from inferd.protocol.deploy import HFSource
from inferd.settings import Settings


def test_paths_must_lie_under_an_allowed_directory(tmp_path):
    allowed = tmp_path / "models"
    (allowed / "m").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (allowed / "link").symlink_to(tmp_path / "secret")
    settings = Settings(data_dir=tmp_path, deploy_paths=[allowed])
    assert manager.weights_source(settings, None, str(allowed / "m")) == (f"path:{allowed / 'm'}", allowed / "m")
    for path in (str(tmp_path / "secret"), str(allowed / "link"), str(allowed / ".." / "secret"), "/etc",
                 str(allowed / "missing")):
        with pytest.raises(Forbidden):
            manager.weights_source(settings, None, path)
    with pytest.raises(Forbidden):
        manager.weights_source(Settings(data_dir=tmp_path), None, str(allowed / "m"))  # none allowed by default
    with pytest.raises(InvalidRequest):
        manager.weights_source(settings, None, None)
    assert manager.weights_source(settings, HFSource(repo="org/name", revision="v1"), None) == ("hf:org/name@v1", None)
    with pytest.raises(Forbidden):
        manager.weights_source(Settings(data_dir=tmp_path, deploy_from_hub=False), HFSource(repo="org/name"), None)


def test_a_repository_larger_than_the_download_cap_is_not_fetched(monkeypatch):
    monkeypatch.setattr(manager, "_hub_size", lambda source, token: 80 << 30)  # what the hub says of its files
    with pytest.raises(SourceError, match="80.00 GiB on the hub"):
        manager.fetch("hf:org/huge", None, max_bytes=50 << 30)
