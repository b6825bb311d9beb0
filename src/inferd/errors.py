"""The domain error tree, and the one table that maps it to HTTP statuses.

    InferdError
     +-- InvalidRequest            400  bad value the schema could not catch
     |    +-- UnsupportedInput     400  e.g. an image sent to a text-only model
     +-- Unauthorized              401  missing or unknown token
     +-- SpendingLimitReached      402  the account's or the token's spending limit is spent
     +-- Forbidden                 403  a valid token without the right
     +-- NotFound                  404  a token, an account... (not the caller's to see, or absent)
     |    +-- ModelNotFound        404
     +-- Conflict                  409  e.g. a token name the account already uses
     +-- InputTooLarge             413  too many inputs, or too long with too_long=error
     +-- Overloaded                429  queue full (Retry-After)
     +-- ModelNotReady             503  still loading (Retry-After)
     +-- ModelUnavailable          503  failed to load, or its engine died; the reason is in the message
     |    +-- NoReplica            503  no Ray Serve replica answered in time (none placed yet; Retry-After)
     +-- ServiceUnavailable        503  a part the request needs (the database) is unreachable (Retry-After)
     +-- ClientDisconnected        499  the client went away; nothing is sent
     +-- EngineError               500  the runtime failed on a request

Routes never build error responses themselves: they raise, and ``api/errors.py`` shapes
the error in the dialect of the route that raised it.
"""

from __future__ import annotations


class InferdError(Exception):
    code: str = "internal_error"
    kind: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return status_of(self)

    def __reduce__(self):
        # pickled whole (a model replica on Ray Serve raises it; the ingress answers it): the
        # default would call the class with ``args`` alone and lose param and retry_after
        return _rebuild, (type(self), self.message, self.param, self.retry_after)


def _rebuild(cls: type[InferdError], message: str, param: str | None, retry_after: float | None) -> InferdError:
    return cls(message, param=param, retry_after=retry_after)


class InvalidRequest(InferdError):
    code = "invalid_request"
    kind = "invalid_request_error"


class UnsupportedInput(InvalidRequest):
    code = "unsupported_input"


class Unauthorized(InferdError):
    code = "invalid_api_key"
    kind = "authentication_error"


class Forbidden(InferdError):
    code = "forbidden"
    kind = "permission_error"


class SpendingLimitReached(InferdError):
    code = "spending_limit_reached"
    kind = "billing_error"


class NotFound(InferdError):
    code = "not_found"
    kind = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(InferdError):
    code = "conflict"
    kind = "invalid_request_error"


class InputTooLarge(InferdError):
    code = "input_too_large"
    kind = "invalid_request_error"


class Overloaded(InferdError):
    code = "rate_limited"
    kind = "rate_limit_error"


class ModelNotReady(InferdError):
    code = "model_loading"
    kind = "service_unavailable"


class ModelUnavailable(InferdError):
    code = "model_unavailable"
    kind = "service_unavailable"


class NoReplica(ModelUnavailable):
    """No replica of a model on Ray Serve answered in time: none could be placed or started yet
    (scale from zero, a cluster without room); the cluster may still make room. (The wire code
    is ModelUnavailable's.)"""


class ServiceUnavailable(InferdError):
    code = "service_unavailable"
    kind = "service_unavailable"


class ClientDisconnected(InferdError):
    code = "client_disconnected"
    kind = "client_error"


class EngineError(InferdError):
    code = "engine_error"
    kind = "server_error"


# The one status table. Order matters only in that subclasses come before parents.
STATUS_TABLE: tuple[tuple[type[InferdError], int], ...] = (
    (UnsupportedInput, 400),
    (InvalidRequest, 400),
    (Unauthorized, 401),
    (SpendingLimitReached, 402),
    (Forbidden, 403),
    (ModelNotFound, 404),
    (NotFound, 404),
    (Conflict, 409),
    (InputTooLarge, 413),
    (Overloaded, 429),
    (ModelNotReady, 503),
    (NoReplica, 503),
    (ModelUnavailable, 503),
    (ServiceUnavailable, 503),
    (ClientDisconnected, 499),
    (EngineError, 500),
    (InferdError, 500),
)


def status_of(error: InferdError) -> int:
    for cls, status in STATUS_TABLE:
        if isinstance(error, cls):
            return status
    return 500
