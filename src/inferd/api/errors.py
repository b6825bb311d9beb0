"""Every error leaves through here, shaped in the dialect of the route that raised it.

    OpenAI / Infinity   {"error": {"message", "type", "param", "code"}}
    native, platform    {"error": "message"} (DeepInfra's DeepError)
    Cohere              {"message": "message"}
    Anthropic           {"type": "error", "error": {"type", "message"}}
    validation (422)    FastAPI's {"detail": [...]} on native and Infinity routes; the
                        OpenAI and Cohere surfaces answer 400 in their own shape, as they do.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from inferd.api.responses import FastJSONResponse
from inferd.api.routing import ANTHROPIC, COHERE, ELEVENLABS, NATIVE, OPENAI, PLATFORM, dialect_of
from inferd.errors import InferdError

log = logging.getLogger(__name__)

MAX_ERRORS = 20  # validation errors listed in one 422
_HTTP_KINDS = {401: "authentication_error", 402: "billing_error", 403: "permission_error", 404: "not_found_error",
               405: "invalid_request_error", 409: "invalid_request_error"}


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    kind: str,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> Response:
    dialect = dialect_of(request.scope)
    if dialect in (NATIVE, PLATFORM):
        body: dict = {"error": message}
    elif dialect == COHERE:
        body = {"message": message}
    elif dialect == ANTHROPIC:
        body = {"type": "error", "error": {"type": kind, "message": message}}
    elif dialect == ELEVENLABS:
        body = {"detail": {"status": code or kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    headers = {"Retry-After": str(int(max(1, round(retry_after))))} if retry_after is not None else None
    return FastJSONResponse(body, status_code=status, headers=headers)


async def on_inferd_error(request: Request, exc: InferdError) -> Response:
    if exc.status >= 500:
        log.error("%s: %s", type(exc).__name__, exc.message)
    return error_response(
        request, exc.status, exc.message, kind=exc.kind, code=exc.code, param=exc.param, retry_after=exc.retry_after
    )


def _describe(errors: list[dict]) -> tuple[str, str | None]:
    """One readable message for OpenAI clients; ``param`` is the top-level field at fault."""
    if not errors:
        return "Invalid request", None
    if errors[0].get("type") == "json_invalid":
        return "The request body is not valid JSON", None
    fields = [str(p) for p in errors[0].get("loc", ()) if p not in ("body", "query", "path")]
    param = fields[0] if fields else None
    same_field = [e for e in errors if param in map(str, e.get("loc", ()))]
    reasons = list(dict.fromkeys(str(e.get("msg")) for e in same_field))
    reason = "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
    if len(same_field) > 1:
        reason = f"not any accepted form ({reason})"
    message = f"`{param}`: {reason}" if param else reason
    others = len(errors) - len(same_field)
    if others:
        message += f" (and {others} more problem{'s' if others > 1 else ''})"
    return message, param


async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    if dialect_of(request.scope) not in (OPENAI, COHERE, ANTHROPIC):
        # where and why, never the input itself: echoing it would send a 32 MiB body back (once
        # per union branch) and values JSON cannot carry (integers past 64 bits)
        detail = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": str(e.get("msg"))}
                  for e in errors[:MAX_ERRORS]]
        return FastJSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)
    message, param = _describe(errors)
    return error_response(request, 400, message, kind="invalid_request_error", code="invalid_request", param=param)


async def on_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    if exc.status_code == 404 and message == "Not Found":
        message = f"No route {request.method} {request.url.path}"
    response = error_response(
        request, exc.status_code, message, kind=_HTTP_KINDS.get(exc.status_code, "invalid_request_error")
    )
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InferdError, on_inferd_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
