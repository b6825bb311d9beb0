"""The front door of a real `inferd serve` (MiniLM, SmolLM2 on vLLM), probed as an attacker
would: a 100 MB body, bodies with and without a token, a client request id reused by two
streams, invalid UTF-8 and wrong content types."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx

from tests.conftest import MINILM

CHAT = "/v1/openai/chat/completions"


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def send_big_body(server, size: int, token: str | None) -> tuple[int, bytes]:
    """Declares ``size`` bytes and sends as many as the server will take; returns the status line's
    code and what the server answered (it answers before reading the body)."""
    headers = f"POST /v1/openai/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
              f"Content-Length: {size}\r\n"
    if token:
        headers += f"Authorization: Bearer {token}\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall((headers + "\r\n").encode())
        chunk = b"[" + b"1," * (1 << 19)
        sent = 0
        sock.settimeout(0.5)
        answer = b""
        while sent < size and not answer:
            try:
                sent += sock.send(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                pass
        sock.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except (TimeoutError, ConnectionResetError):
            pass
    return int(answer.split(b" ", 2)[1]), answer


def test_a_100_mb_body_is_413_and_memory_stays_flat(server):
    pid = server.pid
    before = rss_mb(pid)
    for token in (None, server.token):
        status, answer = send_big_body(server, 100 << 20, token)
        assert status == (401 if token is None else 413), answer[:300]
    assert rss_mb(pid) - before < 50
    ok = httpx.post(f"{server.base_url}/v1/openai/embeddings", json={"model": MINILM, "input": "hi"},
                    headers=server.headers(), timeout=30)
    assert ok.status_code == 200


def test_invalid_utf8_and_wrong_content_types_are_4xx(server):
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=30) as client:
        for content, kind in ((b'{"model": "x", "input": "\xff\xfe"}', "application/json"),
                              (b"model=x&input=y", "application/x-www-form-urlencoded"),
                              (b"\x00\x01\x02", "application/octet-stream"),
                              (b'{"model": "x"', "text/plain")):
            for path in ("/v1/openai/embeddings", f"/v1/inference/{MINILM}", CHAT, "/anthropic/v1/messages",
                         "/v1/rerank"):
                r = client.post(path, content=content, headers={"Content-Type": kind})
                assert 400 <= r.status_code < 500, (path, kind, r.status_code, r.text)
                assert "x-request-id" in r.headers
        assert client.get("/health").status_code == 200


def test_a_reused_client_request_id_is_a_label_not_a_key(server):
    """Two streams with the same X-Request-ID: the first client leaves after 5 chunks; the
    second still gets every token it asked for (vLLM keys requests by the server's id)."""
    body = {"model": "default", "messages": [{"role": "user", "content": "Count to a hundred."}],
            "max_tokens": 64, "ignore_eos": True, "stream": True, "temperature": 0}
    headers = {**server.headers(), "X-Request-ID": "retry-7"}
    out: dict[str, list] = {}

    def first():
        with httpx.stream("POST", server.base_url + CHAT, json=body, headers=headers, timeout=60) as r:
            for n, _ in enumerate(r.iter_lines()):
                if n >= 10:
                    return  # leaves: the connection closes

    def second():
        with httpx.stream("POST", server.base_url + CHAT, json=body, headers=headers, timeout=60) as r:
            assert r.headers["x-request-id"] == "retry-7"
            out["chunks"] = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(90)
    chunks = out["chunks"]
    assert chunks[-1]["usage"]["completion_tokens"] == 64
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] == "length"
