"""The catalog: the models this server offers, looked up by id, alias and version."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from inferd.catalog.spec import ModelSpec, Task, VersionSpec
from inferd.errors import ModelNotFound


class CatalogError(Exception):
    """The catalog file is missing or malformed; the message names the entry."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    spec: ModelSpec
    version: VersionSpec

    @property
    def key(self) -> str:
        return f"{self.spec.id}:{self.version.name}"


def split_version(name: str, version: str | None = None) -> tuple[str, str | None]:
    """``MODEL:VERSION`` -> (MODEL, VERSION); an explicit ``version`` wins."""
    base, sep, tail = name.rpartition(":")
    if sep and base and "/" not in tail:
        return base, version or tail
    return name, version


class Catalog:
    def __init__(self, specs: Iterable[ModelSpec]):
        self._by_id: dict[str, ModelSpec] = {}
        self._aliases: dict[str, list[ModelSpec]] = {}
        for spec in specs:
            if spec.id in self._by_id:
                raise CatalogError(f"model {spec.id!r} is listed twice")
            self._by_id[spec.id] = spec
        for spec in self._by_id.values():
            for alias in spec.aliases:
                self._aliases.setdefault(alias, []).append(spec)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def refs(self) -> Iterator[ModelRef]:
        for spec in self:
            for version in spec.versions:
                yield ModelRef(spec, version)

    def resolve(self, name: str, version: str | None = None, task: Task | None = None) -> ModelRef:
        """Find a model by id or alias (``MODEL:VERSION`` accepted); raise ModelNotFound."""
        base, version = split_version(name, version)
        spec = self._by_id.get(base) or self._by_alias(base, task)
        if spec is None or (task is not None and spec.task != task):
            wanted = f" for {task.value}" if task else ""
            shown = base if len(base) <= 200 else base[:200] + "…"  # a client's name, echoed: bounded
            raise ModelNotFound(f"The model `{shown}` does not exist{wanted}", param="model")
        chosen = spec.get_version(version)
        if chosen is None:
            raise ModelNotFound(f"The model `{base}` has no version `{version}`", param="model")
        return ModelRef(spec, chosen)

    def _by_alias(self, alias: str, task: Task | None) -> ModelSpec | None:
        candidates = self._aliases.get(alias, [])
        for spec in candidates:
            if task is None or spec.task == task:
                return spec
        return None


def parse_catalog(text: str, origin: str = "<catalog>") -> Catalog:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CatalogError(f"{origin}: not valid YAML: {exc}") from exc
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise CatalogError(f"{origin}: expected a top-level `models:` list")
    specs = []
    for position, entry in enumerate(entries):
        try:
            specs.append(ModelSpec.model_validate(entry))
        except ValidationError as exc:
            name = entry.get("id", f"#{position}") if isinstance(entry, dict) else f"#{position}"
            raise CatalogError(f"{origin}: model {name}: {exc}") from exc
    return Catalog(specs)


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the catalog file, or the embedded default one when ``path`` is None."""
    if path is None:
        text = resources.files("inferd.catalog").joinpath("default.yaml").read_text()
        return parse_catalog(text, "default catalog")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from exc
    return parse_catalog(text, str(path))
