"""Request dependencies: the bearer token check, and the request context it yields."""

from __future__ import annotations

from fastapi import Depends, Request

from inferd.api.state import AppState, app_state
from inferd.errors import Unauthorized
from inferd.serving.context import RequestContext


def request_id(request: Request) -> str:
    return request.scope["state"]["request_id"]


async def authenticated(request: Request, state: AppState = Depends(app_state)) -> RequestContext:
    ctx = RequestContext(request_id=request_id(request))
    if not state.settings.auth:
        return ctx
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("Missing API token: send `Authorization: Bearer <token>`")
    token = await state.tokens.verify(secret)
    if token is None:
        raise Unauthorized("Invalid API token")
    ctx.token = token
    return ctx
