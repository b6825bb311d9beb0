"""Routes know their API dialect, so errors can be shaped the way that dialect's clients expect."""

from __future__ import annotations

from fastapi.routing import APIRoute

OPENAI = "openai"
NATIVE = "native"
INFINITY = "infinity"
COHERE = "cohere"
ANTHROPIC = "anthropic"
PLATFORM = "platform"


def dialect_route(dialect: str) -> type[APIRoute]:
    return type(f"{dialect.title()}Route", (APIRoute,), {"dialect": dialect})


def dialect_of(scope: dict) -> str:
    return getattr(scope.get("route"), "dialect", OPENAI)
