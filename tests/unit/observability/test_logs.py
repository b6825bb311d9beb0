import io
import json
import logging

from inferd.observability.logs import configure_logging, request_id_var


def test_json_logs_carry_the_request_id(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        token = request_id_var.set(("req-123", "client-7"))
        logging.getLogger("inferd.test").info("hello %s", "world")
        request_id_var.reset(token)
        logging.getLogger("inferd.test").warning("outside")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == "req-123" and first["msg"] == "hello world" and first["level"] == "info"
    assert first["client_request_id"] == "client-7"
    assert second["request_id"] == "-" and "client_request_id" not in second
