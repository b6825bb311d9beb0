"""create_app() and the thin routers, one per API surface."""

from inferd.api.app import create_app

__all__ = ["create_app"]
