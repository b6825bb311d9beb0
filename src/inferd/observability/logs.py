"""Logging: text or JSON lines, each carrying the request id of the request being served."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

# (the server's request id, the client's X-Request-ID or None) of the request being served
request_id_var: ContextVar[tuple[str, str | None] | None] = ContextVar("inferd_request_id", default=None)


class _RequestIdFilter(logging.Filter):
    """``request_id`` (the server's), ``client_request_id``, and ``ids``: both, for text lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = request_id_var.get()
        record.request_id, record.client_request_id = ids if ids else ("-", None)
        record.ids = record.request_id if record.client_request_id is None else \
            f"{record.request_id} client={record.client_request_id}"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "msg": record.getMessage(),
        }
        for key in ("client_request_id", "route", "status", "duration_ms", "model"):
            if getattr(record, key, None) is not None:
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(ids)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "huggingface_hub", "sentence_transformers", "transformers", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
