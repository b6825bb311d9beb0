"""The catalog: the models this server offers, looked up by id, alias, version and deploy id.

The catalog file is the starting state; deployments (``deployments/``) install and uninstall
models while the server runs. A deployed model's versions may differ in settings (limits,
options), so a version can carry a spec of its own; ``resolve`` hands back the version's.
Private models (a deployment's, by default) are found only by a ``Viewer`` allowed to see them:
the default viewer sees public models only, so a caller that forgets to say who asks fails closed.
"""

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


DEPLOY_PREFIXES = ("deploy_id:", "deploy/")  # `deploy_id:ID` as a model name; /v1/inference/deploy/ID


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks a model up: private models are found only by their owner and admins."""

    account_id: str | None
    admin: bool = False

    def sees(self, spec: ModelSpec) -> bool:
        return not spec.private or self.admin or (spec.owner is not None and spec.owner == self.account_id)


PUBLIC = Viewer(None)  # sees the public models only
EVERYONE = Viewer(None, admin=True)  # the server itself: sees every model


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
        self._version_specs: dict[str, ModelSpec] = {}  # ref key -> that version's own spec
        self._deploys: dict[str, tuple[str, str]] = {}  # deploy id -> (model id, version name)
        self._adapters: dict[tuple[str, str], str] = {}  # (base model id, adapter name) -> the adapter's id
        for spec in specs:
            if spec.id in self._by_id:
                raise CatalogError(f"model {spec.id!r} is listed twice")
            self._by_id[spec.id] = spec
        self._index()

    def _index(self) -> None:
        self._aliases = {}
        self._deploys = {}
        self._adapters = {}
        for spec in self._by_id.values():
            base = spec.options.get("lora_base")
            if base:
                self._adapters[(base, spec.id)] = spec.id
            for alias in spec.aliases:
                self._aliases.setdefault(alias, []).append(spec)
            for version in spec.versions:
                if version.deploy_id:
                    self._deploys[version.deploy_id] = (spec.id, version.name)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._by_id

    def is_alias(self, name: str) -> bool:
        return name in self._aliases

    def visible(self, viewer: Viewer) -> list[ModelSpec]:
        return [spec for spec in self._by_id.values() if viewer.sees(spec)]

    def refs(self) -> Iterator[ModelRef]:
        for spec in self:
            for version in spec.versions:
                yield self._ref(spec, version)

    def _ref(self, spec: ModelSpec, version: VersionSpec) -> ModelRef:
        return ModelRef(self._version_specs.get(f"{spec.id}:{version.name}", spec), version)

    def resolve(self, name: str, version: str | None = None, task: Task | None = None,
                viewer: Viewer = PUBLIC) -> ModelRef:
        """Find a model by id, alias (``MODEL:VERSION`` accepted) or deploy id (``deploy_id:ID``,
        ``deploy/ID``) that ``viewer`` may see; raise ModelNotFound."""
        if name.startswith(DEPLOY_PREFIXES):
            return self._by_deploy(name.partition(":" if name.startswith("deploy_id:") else "/")[2], task, viewer)
        base, version = split_version(name, version)
        spec = self._by_id.get(base) or self._by_alias(base, task, viewer)
        if spec is None or (task is not None and spec.task != task) or not viewer.sees(spec):
            raise _not_found(base, task)
        chosen = spec.get_version(version)
        if chosen is None and (spec.id, version) in self._adapters:  # BASE:ADAPTER
            return self.resolve(self._adapters[(spec.id, version)], None, task, viewer)
        if chosen is None:
            raise ModelNotFound(f"The model `{_shown(base)}` has no version `{_shown(version or '')}`", param="model")
        return self._ref(spec, chosen)

    def _by_deploy(self, deploy_id: str, task: Task | None, viewer: Viewer) -> ModelRef:
        found = self._deploys.get(deploy_id)
        spec = self._by_id.get(found[0]) if found else None
        if spec is None or (task is not None and spec.task != task) or not viewer.sees(spec):
            raise _not_found(f"deploy_id:{deploy_id}", task)
        return self._ref(spec, spec.get_version(found[1]))

    def _by_alias(self, alias: str, task: Task | None, viewer: Viewer) -> ModelSpec | None:
        candidates = self._aliases.get(alias, [])
        for spec in candidates:
            if (task is None or spec.task == task) and viewer.sees(spec):
                return spec
        return None

    # --- changes while serving (deployments)

    def install(self, spec: ModelSpec, version_specs: dict[str, ModelSpec] | None = None) -> None:
        """Add a model, or replace it (its versions and their order: the first is the default).
        ``version_specs``: a version's own spec where its settings differ from ``spec``'s."""
        self.uninstall(spec.id)
        self._by_id[spec.id] = spec
        for name, own in (version_specs or {}).items():
            self._version_specs[f"{spec.id}:{name}"] = own
        self._index()

    def uninstall(self, model_id: str) -> None:
        spec = self._by_id.pop(model_id, None)
        if spec is not None:
            for version in spec.versions:
                self._version_specs.pop(f"{model_id}:{version.name}", None)
            self._index()


def _shown(name: str) -> str:
    return name if len(name) <= 200 else name[:200] + "…"  # a client's name, echoed: bounded


def _not_found(name: str, task: Task | None) -> ModelNotFound:
    wanted = f" for {task.value}" if task else ""
    return ModelNotFound(f"The model `{_shown(name)}` does not exist{wanted}", param="model")


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
