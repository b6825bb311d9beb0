"""Routes know their API dialect, so errors can be shaped the way that dialect's clients expect,
and they admit a request before its body is read.

Admission, in order, from the headers alone (``DialectRoute.get_route_handler``):
  1. the token (``Authorization: Bearer``; on the Anthropic surface also ``x-api-key``), when
     the route depends on ``authenticated`` (401 / 403 without reading a byte of the body: a
     client without a valid token cannot make the server buffer 32 MiB);
  2. the body size: a ``Content-Length`` past ``max_body_bytes`` (``max_audio_bytes`` for audio
     uploads) is a 413 at once, and a body sent without one is counted as it arrives and cut
     off with a 413 at the limit.
Only then does FastAPI read and validate the body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from inferd.api.deps import admin, admit, audio_upload, authenticated, model_upload

OPENAI = "openai"
NATIVE = "native"
INFINITY = "infinity"
COHERE = "cohere"
ANTHROPIC = "anthropic"
PLATFORM = "platform"
ELEVENLABS = "elevenlabs"
_KEY_HEADERS = {ANTHROPIC: "x-api-key", ELEVENLABS: "xi-api-key"}


def _calls(dependant: Dependant) -> set[Callable]:
    found = {dependant.call} if dependant.call is not None else set()
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


class DialectRoute(APIRoute):
    dialect = OPENAI

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        calls = _calls(self.dependant)
        self.needs_token = bool(calls & {authenticated, admin})
        self.needs_admin = admin in calls
        self.api_key_header = _KEY_HEADERS.get(self.dialect)  # where the surface's clients send the token
        self.audio = audio_upload in calls  # the body is audio: its own size limit
        self.by_model = model_upload in calls  # audio when the model's task takes audio

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()  # called by APIRoute.__init__: needs_* are read per request

        async def admitted(request: Request) -> Response:
            await admit(request, needs_token=self.needs_token, needs_admin=self.needs_admin,
                        api_key_header=self.api_key_header, audio=self.audio, by_model=self.by_model)
            return await handler(request)

        return admitted


def dialect_route(dialect: str) -> type[APIRoute]:
    return type(f"{dialect.title()}Route", (DialectRoute,), {"dialect": dialect})


def dialect_of(scope: dict) -> str:
    return getattr(scope.get("route"), "dialect", OPENAI)
