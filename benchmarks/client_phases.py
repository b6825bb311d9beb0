"""Where a request's time goes, seen from an httpx client: in the client's pool, on the wire,
in the server, reading the answer. 64 clients x 1 sentence against inferd and Infinity.

    .venv/bin/python benchmarks/client_phases.py                    # httpx, then httpx2
    .venv/bin/python benchmarks/client_phases.py --clients httpx --systems inferd --duration 10

Each request carries httpx's ``trace`` extension; the phases are

* ``pool``: from ``client.post()`` to the first byte of the request headers being sent
  (building the request, waiting for a connection in the client's pool, the client's own loop);
* ``send``: sending the request;
* ``server``: request sent -> response headers received (the server's time, plus the wire);
* ``read``: reading the body and giving the connection back.

It was written to find where httpx 0.28's tail under a co-located load comes from
(docs/benchmarks.md, "A heavy client on the same cores").
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embeddings import (
    MODEL,
    make_corpus,
    percentile,
    server_plans,
    start_server,
    stop_server,
)

PHASES = (
    ("pool", "start", "http11.send_request_headers.started"),
    ("send", "http11.send_request_headers.started", "http11.receive_response_headers.started"),
    ("server", "http11.receive_response_headers.started", "http11.receive_response_headers.complete"),
    ("read", "http11.receive_response_headers.complete", "end"),
)


async def load(client_kind: str, url: str, corpus: list[str], concurrency: int, duration: float, warmup: float):
    httpx = importlib.import_module(client_kind)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)  # the openai SDK's
    records: list[dict] = []
    began = time.perf_counter()
    stop_at = began + warmup + duration

    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def one_client(i: int) -> None:
            cursor = i
            while time.perf_counter() < stop_at:
                marks = {"start": time.perf_counter()}

                async def trace(name, _info, marks=marks):
                    marks[name] = time.perf_counter()

                response = await client.post(url, json={"model": MODEL, "input": [corpus[cursor % len(corpus)]]},
                                             extensions={"trace": trace})
                response.raise_for_status()
                marks["end"] = time.perf_counter()
                marks["new"] = "connection.connect_tcp.started" in marks
                cursor += concurrency
                if marks["end"] - began > warmup:
                    records.append(marks)

        await asyncio.gather(*(one_client(i) for i in range(concurrency)))
    return records


def summary(name: str, records: list[dict], duration: float) -> None:
    total = [(r["end"] - r["start"]) * 1000 for r in records]
    p50, p99 = percentile(total, 50), percentile(total, 99)
    print(f"  {name}: {len(records) / duration:.1f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms "
          f"(p99/p50 {p99 / p50:.1f}), new connections {sum(r['new'] for r in records)}")
    for phase, start, end in PHASES:
        values = [(r.get(end, r["end"]) - r.get(start, r["start"])) * 1000 for r in records]
        print(f"    {phase:7s} p50 {percentile(values, 50):7.1f} ms   p99 {percentile(values, 99):7.1f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="httpx,httpx2", help="comma list of httpx,httpx2")
    parser.add_argument("--systems", default="inferd,infinity", help="comma list of inferd,infinity")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    args = parser.parse_args(argv)
    args.port_base = None
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.systems = systems
    corpus = make_corpus()
    workdir = Path(tempfile.mkdtemp(prefix="inferd-phases-"))
    for plan in server_plans(args, workdir):
        proc = start_server(plan["name"], plan["command"], workdir / f"{plan['name']}.log", plan["health_url"],
                            plan["is_ready"], plan["timeout"])
        try:
            for client_kind in [c.strip() for c in args.clients.split(",") if c.strip()]:
                records = asyncio.run(load(client_kind, plan["embed_url"], corpus, args.concurrency,
                                           args.duration, args.warmup))
                summary(f"{plan['name']} with {client_kind}", records, args.duration)
        finally:
            stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
