"""Admission and the request context: the bearer token and the body limit, checked from the
headers before the body is read (``admit``, called by every dialect route, api/routing.py), and
the dependencies a handler declares to say what it needs (``authenticated``, ``admin``)."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request

from inferd.accounts.scoped import JWT_PREFIX
from inferd.accounts.spending import spend_limits
from inferd.accounts.tokens import TokenInfo
from inferd.api.state import AppState, app_state
from inferd.catalog import Task
from inferd.errors import Forbidden, InferdError, Unauthorized
from inferd.serving.context import RequestContext

_CTX = "inferd_ctx"
MAX_SCOPED_TOKEN = 16384  # a scoped token lists up to 100 model names
AUDIO_TASKS = {Task.AUTOMATIC_SPEECH_RECOGNITION}


def new_context(request: Request) -> RequestContext:
    state = request.scope["state"]
    return RequestContext(request_id=state["request_id"], client_request_id=state.get("client_request_id"))


def body_too_large(limit: int) -> HTTPException:
    # An HTTPException: FastAPI passes these through its body parsing (anything else there becomes a 400).
    return HTTPException(413, f"The request body is larger than this server accepts ({limit} bytes)",
                         headers={"Connection": "close"})


def limit_body(request: Request, limit: int) -> None:
    """413 now for a declared length past ``limit``; a body of unknown length is counted as it arrives."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or int(declared) > limit:
            raise body_too_large(limit)
        return
    receive = request._receive
    seen = 0

    async def counted():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise body_too_large(limit)
        return message

    request._receive = counted


def presented_token(request: Request, api_key_header: str | None) -> str:
    """The token a request carries: ``Authorization: Bearer`` everywhere, and on a surface whose
    clients send it in a header of their own, that header (``x-api-key``: Anthropic's API
    reference, curl examples and several of its clients; ``xi-api-key``: ElevenLabs' clients)."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        return secret.strip()
    if api_key_header and (key := request.headers.get(api_key_header, "").strip()):
        return key
    where = f"`{api_key_header}: <token>` or `Authorization: Bearer <token>`" if api_key_header else \
        "`Authorization: Bearer <token>`"
    raise Unauthorized(f"Missing API token: send {where}")


async def verified_token(request: Request, state: AppState, api_key_header: str | None) -> TokenInfo:
    """The request's token, verified: known, not expired, its account enabled, used from an
    allowed address. A scoped token (``jwt:...``) has its parent token's rights, narrowed."""
    secret = presented_token(request, api_key_header)
    scoped = secret.startswith(JWT_PREFIX)
    if len(secret) > (MAX_SCOPED_TOKEN if scoped else 512):
        raise Unauthorized("Invalid API token")
    token = await (state.scoped.verify(secret) if scoped else state.tokens.verify(secret))
    if token is None:
        raise Unauthorized("Invalid API token")
    if token.expired():
        raise Unauthorized("This API token has expired")
    if token.account_disabled:
        raise Forbidden("This API token's account is disabled")
    if not token.allows(request.client.host if request.client else None):
        raise Forbidden("This API token may not be used from this address (see its allowed_ips)")
    return token


async def audio_upload() -> None:
    """A dependency that marks a route whose body is audio: its limit is ``max_audio_bytes``. (Async,
    as every dependency here: FastAPI runs a plain function in its thread pool, a hop per request.)"""


async def model_upload() -> None:
    """A dependency that marks the native route: its body is audio when its model's task takes audio."""


def _audio_model(request: Request, state: AppState, ctx: RequestContext) -> bool:
    try:
        model, version = request.path_params.get("model", ""), request.query_params.get("version")
        return state.catalog.resolve(model, version, viewer=ctx.viewer).spec.task in AUDIO_TASKS
    except InferdError:  # the handler answers it (404) once admitted
        return False


async def admit(request: Request, *, needs_token: bool, needs_admin: bool, api_key_header: str | None = None,
                audio: bool = False, by_model: bool = False) -> None:
    """Everything that can be decided from the headers, before a byte of the body is read."""
    state: AppState = request.app.state.inferd
    settings = state.settings
    ctx = new_context(request)
    if needs_token and settings.auth:
        token = await verified_token(request, state, api_key_header)
        if needs_admin and (not token.is_admin or token.scope is not None):
            raise Forbidden("This route needs an admin token")
        for key, _, _ in spend_limits(token):  # the spending so far, fresh to token_cache_ttl_s
            await state.spending.prime(key)
        ctx.token = token
    request.scope["state"][_CTX] = ctx
    if audio or (by_model and _audio_model(request, state, ctx)):
        # room for the audio as base64 in JSON, and form fields; the audio itself is checked on its own
        limit_body(request, state.speech.max_bytes * 4 // 3 + (64 << 10))
    else:
        limit_body(request, settings.max_body_bytes)


async def _admitted(request: Request, needs_admin: bool) -> RequestContext:
    """The context ``admit`` left; a route of another class is admitted here, after its body was read."""
    if _CTX not in request.scope["state"]:
        await admit(request, needs_token=True, needs_admin=needs_admin)
    return request.scope["state"][_CTX]


async def authenticated(request: Request, _: AppState = Depends(app_state)) -> RequestContext:
    """The request's context; its token was checked (from the headers) when the route admitted it."""
    return await _admitted(request, needs_admin=False)


async def admin(request: Request, _: AppState = Depends(app_state)) -> RequestContext:
    """Like ``authenticated``, and the token must be an admin's (403 otherwise)."""
    return await _admitted(request, needs_admin=True)
