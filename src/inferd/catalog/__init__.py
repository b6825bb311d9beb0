"""Model specs, sources, versions, aliases and pricing."""

from inferd.catalog.catalog import (EVERYONE, PUBLIC, Catalog, CatalogError, ModelRef, Viewer, load_catalog,
                                    parse_catalog)
from inferd.catalog.pricing import Units, cost_nano_usd, nano_to_usd
from inferd.catalog.spec import Limits, ModelSpec, Scaling, Task, VersionSpec

__all__ = [
    "EVERYONE",
    "PUBLIC",
    "Viewer",
    "Catalog",
    "CatalogError",
    "Limits",
    "Scaling",
    "ModelRef",
    "ModelSpec",
    "Task",
    "Units",
    "VersionSpec",
    "cost_nano_usd",
    "nano_to_usd",
    "load_catalog",
    "parse_catalog",
]
