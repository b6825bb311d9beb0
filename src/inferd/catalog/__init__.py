"""Model specs, sources, versions, aliases and pricing."""

from inferd.catalog.catalog import Catalog, CatalogError, ModelRef, load_catalog, parse_catalog
from inferd.catalog.pricing import Units, cost_cents
from inferd.catalog.spec import Limits, ModelSpec, Task, VersionSpec

__all__ = [
    "Catalog",
    "CatalogError",
    "Limits",
    "ModelRef",
    "ModelSpec",
    "Task",
    "Units",
    "VersionSpec",
    "cost_cents",
    "load_catalog",
    "parse_catalog",
]
