"""One pure-ASGI middleware: request ids, per-route request counts and latency, an optional
access log, and the last word on errors nothing else caught.

Every request gets a server-made id (the key of its engine work and usage rows, and on every
log line). A client's ``X-Request-ID`` is kept as a label: echoed in the response's
``X-Request-ID`` (ours is sent when the client gave none), logged and stored with the usage
row, never used as a key. An exception no handler caught becomes a 500 in the route's
dialect here, inside the middleware, so it carries ``X-Request-ID`` too and the connection
stays usable (Starlette's outermost handler re-raises, and the server then drops the
keep-alive connection).
"""

from __future__ import annotations

import logging
import re
import time

from starlette.requests import Request

from inferd.api.errors import error_response
from inferd.api.pacing import Pacer
from inferd.observability.logs import request_id_var
from inferd.observability.metrics import Metrics
from inferd.serving.context import new_request_id

log = logging.getLogger("inferd.access")
errors = logging.getLogger("inferd.errors")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def client_request_id(scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _VALID_ID.match(candidate) else None
    return None


# answered at once, whatever the load: probes must see a busy server as alive and ready
UNPACED = frozenset({"/health", "/livez", "/metrics"})


class RequestContextMiddleware:
    def __init__(self, app, metrics: Metrics, access_log: bool = False, requests_per_turn: int = 8):
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.pacer = Pacer(requests_per_turn)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        client_rid = client_request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"], state["client_request_id"] = rid, client_rid
        reset = request_id_var.set((rid, client_rid))
        status, responded = 500, False
        started = time.perf_counter()
        header = (b"x-request-id", (client_rid or rid).encode())

        async def send_with_id(message):
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            if scope["path"] not in UNPACED:
                await self.pacer.start()
            await self.app(scope, receive, send_with_id)
        except Exception:
            if responded:  # too late for a status: the server closes the connection
                raise
            errors.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            response = error_response(Request(scope), 500, f"Internal error (request id {rid})",
                                      kind="server_error", code="internal_error")
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "<unmatched>")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            if self.access_log:
                log.info(
                    "%s %s -> %d in %.1f ms", scope["method"], scope["path"], status, elapsed * 1000,
                    extra={"route": route, "status": status, "duration_ms": round(elapsed * 1000, 2)},
                )
            request_id_var.reset(reset)
