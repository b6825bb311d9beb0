"""One pure-ASGI middleware: request id (header ``X-Request-ID`` in and out, and on every
log line), per-route request counts and latency, and an optional access log."""

from __future__ import annotations

import logging
import re
import time

from inferd.observability.logs import request_id_var
from inferd.observability.metrics import Metrics
from inferd.serving.context import new_request_id

log = logging.getLogger("inferd.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app, metrics: Metrics, access_log: bool = False):
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _VALID_ID.match(candidate) else None
                break
        rid = rid or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        reset = request_id_var.set(rid)
        status = 500
        started = time.perf_counter()
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
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
