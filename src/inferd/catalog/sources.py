"""Resolve a catalog ``source`` to a local directory or file.

    hf:org/name[@revision]   through huggingface_hub (its cache, or the hub when reachable)
    pkg:module[:attribute]   an installed Python package that ships weights (imported)
    pkg:module/path/in/it    a file or folder inside an installed package (not imported:
                             some weight packages cannot be imported without extras)
    path:/some/dir, ./dir    a local directory or file
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any


class SourceError(Exception):
    """The source cannot be resolved; the message says why."""


def resolve_source(source: str, token: str | None = None, progress: Any = None) -> Path:
    """``token``: a Hugging Face token for a gated or private repository (hf: sources only);
    ``progress``: the tqdm class a download reports its bytes to (huggingface_hub's bars when None)."""
    scheme, _, rest = source.partition(":")
    if scheme == "hf" and rest:
        return _resolve_hf(rest, token, progress)
    if scheme == "pkg" and rest:
        return _resolve_package(rest)
    if scheme == "path" and rest:
        return _resolve_path(rest)
    return _resolve_path(source)


def _resolve_hf(spec: str, token: str | None = None, progress: Any = None) -> Path:
    repo_id, _, revision = spec.partition("@")
    if repo_id.count("/") != 1:
        raise SourceError(f"hf source {spec!r} must be 'org/name[@revision]'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision or None, token=token or None, tqdm_class=progress))
    except LocalEntryNotFoundError as exc:
        raise SourceError(
            f"{repo_id}@{revision or 'main'} is not in the Hugging Face cache and the hub "
            f"cannot be reached: {exc}"
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise SourceError(f"cannot fetch {repo_id}: {exc}") from exc


def _resolve_package(spec: str) -> Path:
    if "/" in spec and ":" not in spec:
        return _resolve_package_file(spec)
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SourceError(f"package {module_name!r} is not installed ({exc})") from exc
    target = getattr(module, attribute or "get_model_path", None)
    if callable(target):
        target = target()
    if target is None:
        if attribute:
            raise SourceError(f"package {module_name!r} has no attribute {attribute!r}")
        target = Path(module.__file__ or "").parent
    return _resolve_path(str(target))


def _resolve_path(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    return path.resolve()


def _resolve_package_file(spec: str) -> Path:
    module_name, _, inner = spec.partition("/")
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise SourceError(f"package {module_name!r} cannot be found ({exc})") from exc
    if found is None or not found.submodule_search_locations:
        raise SourceError(f"package {module_name!r} is not installed")
    return _resolve_path(str(Path(next(iter(found.submodule_search_locations))) / inner))
