"""Text-to-image throughput: the pipeline in process on a batch, inferd, and a plain diffusers
endpoint (one request at a time: benchmarks/peers/diffusers_endpoint.py), side by side in one run.

    .venv/bin/python benchmarks/images.py
    .venv/bin/python benchmarks/images.py --size 128 --steps 4

The pipeline has a small real model's shape with random weights (no diffusion checkpoint installs
offline): BK-SDM-Tiny's UNet (323 M parameters), CLIP ViT-L/14's text encoder, TAESD as the VAE
(benchmarks/pipelines/bk-sdm-tiny-random), built once into .bench/cache by inferd's own builder.
The load: --clients (8) clients at once, each asking for one --size image (256) in --steps (2)
steps at guidance 1.0 (no classifier-free guidance, as turbo and LCM models run), after one
warm-up round. Throughput is images per second of wall time.

* ``in-process``: the same pipeline called once with the 8 prompts (a batch of 8), each with its
  own seed; also one image alone (for the per-image cost without batching).
* ``inferd``: ``inferd serve`` with the pipeline (max_batch_size 8), native text-to-image; inferd
  also scores every image for NSFW content and encodes it as PNG, as it serves.
* ``plain``: the plain endpoint: what a diffusers user gets without a batching server.

Results go to the console and ``.bench/results/images-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from embeddings import REPO, free_port, inferd_command, inferd_ready, save_results, start_server, stop_server  # noqa: E402

SPEC = REPO / "benchmarks" / "pipelines" / "bk-sdm-tiny-random"
CACHE = REPO / ".bench" / "cache"


def pipeline_dir() -> Path:
    from inferd.backends.diffusion_build import built_path

    return built_path(SPEC, CACHE)


def prompts(n: int) -> list[str]:
    things = ["a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen", "a city street in the rain",
              "an astronaut riding a horse", "a field of sunflowers", "a cat on a windowsill", "a sailing boat"]
    return [things[i % len(things)] for i in range(n)]


def in_process(path: Path, clients: int, size: int, steps: int, threads: int) -> dict:
    import torch
    from diffusers import AutoPipelineForText2Image

    torch.set_num_threads(threads)
    pipe = AutoPipelineForText2Image.from_pretrained(str(path), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    def run(texts: list[str]) -> float:
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(len(texts))]
        started = time.perf_counter()
        with torch.inference_mode():
            pipe(texts, width=size, height=size, num_inference_steps=steps, guidance_scale=1.0, generator=generators)
        return time.perf_counter() - started

    run(prompts(1))  # warm up
    alone = run(prompts(1))
    batch = run(prompts(clients))
    row = {"system": "in-process", "images_per_s": clients / batch, "batch_s": batch, "one_image_s": alone,
           "one_at_a_time_images_per_s": 1 / alone}
    print(f"  in-process  batch of {clients}: {row['images_per_s']:.3f} images/s ({batch:.1f} s);  one image alone "
          f"{alone:.2f} s ({row['one_at_a_time_images_per_s']:.3f} images/s)", flush=True)
    return row


async def load(url: str, body_of, clients: int) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        async def one(i: int) -> float:
            started = time.perf_counter()
            async with session.post(url, json=body_of(i)) as r:
                text = await r.text()
                if r.status != 200:
                    raise RuntimeError(f"{r.status}: {text[:300]}")
                body = json.loads(text)
                assert len(body["images"]) == 1
            return time.perf_counter() - started

        await asyncio.gather(*(one(i) for i in range(clients)))  # warm-up round
        started = time.perf_counter()
        latencies = await asyncio.gather(*(one(i + clients) for i in range(clients)))
        wall = time.perf_counter() - started
    latencies = sorted(latencies)
    return {"images_per_s": clients / wall, "wall_s": wall, "p50_s": latencies[len(latencies) // 2],
            "max_s": latencies[-1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="in-process,inferd,plain")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    systems = args.systems.split(",")
    path = pipeline_dir()
    texts = prompts(args.clients * 2)
    print(f"images: {SPEC.name} ({path}), {args.clients} clients x 1 image of {args.size}x{args.size}, "
          f"{args.steps} steps", flush=True)
    rows, failed = [], False
    if "in-process" in systems:
        rows.append(in_process(path, args.clients, args.size, args.steps, args.threads))

    def native(i: int) -> dict:
        return {"prompt": texts[i], "width": args.size, "height": args.size, "num_inference_steps": args.steps,
                "guidance_scale": 1.0, "seed": i}

    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp:
        work = Path(tmp)
        plans = []
        if "inferd" in systems:
            port = free_port()
            catalog = work / "catalog.yaml"
            catalog.write_text(yaml.safe_dump({"models": [{
                "id": "bench/sd", "task": "text-to-image", "backend": "diffusers", "source": str(path),
                "limits": {"max_batch_size": args.clients, "queue_size": 1024}}]}))
            plans.append({"name": "inferd", "port": port, "health": inferd_ready, "path": "/v1/inference/bench/sd",
                          "command": inferd_command(port, catalog, work / "inferd"),
                          "env": {"INFERD_TORCH_THREADS": str(args.threads)}})
        if "plain" in systems:
            port = free_port()
            plans.append({"name": "plain", "port": port, "health": lambda body: True, "path": "/generate",
                          "command": [str(REPO / ".venv/bin/python"), str(REPO / "benchmarks/peers/diffusers_endpoint.py"),
                                      str(path), "--port", str(port), "--threads", str(args.threads)], "env": {}})
        for plan in plans:
            base = f"http://127.0.0.1:{plan['port']}"
            try:
                proc = start_server(plan["name"], plan["command"], work / f"{plan['name']}.log", f"{base}/health",
                                    plan["health"], 600, env=plan["env"])
            except RuntimeError as exc:
                print(f"  {plan['name']} failed to start: {exc}")
                failed = True
                continue
            try:
                result = asyncio.run(load(base + plan["path"], native, args.clients))
                rows.append({"system": plan["name"], **result})
                print(f"  {plan['name']:10s} {args.clients} clients: {result['images_per_s']:.3f} images/s  "
                      f"({result['wall_s']:.1f} s; p50 {result['p50_s']:.1f} s, max {result['max_s']:.1f} s)", flush=True)
            except Exception as exc:  # noqa: BLE001 - report, go on with the next system
                print(f"  {plan['name']} failed: {exc}")
                failed = True
            finally:
                stop_server(proc)
    by = {r["system"]: r for r in rows}
    print("\nratios")
    mine, ceiling, plain = by.get("inferd"), by.get("in-process"), by.get("plain")
    if mine and ceiling:
        print(f"  inferd / in-process (batch of {args.clients}): {mine['images_per_s'] / ceiling['images_per_s']:.2f}")
        print(f"  in-process batch of {args.clients} / one at a time: "
              f"{ceiling['images_per_s'] / ceiling['one_at_a_time_images_per_s']:.2f}x (what batching can give here)")
    if mine and plain:
        print(f"  inferd / plain endpoint (one at a time): {mine['images_per_s'] / plain['images_per_s']:.2f}x")
    save_results("images", {"args": vars(args), "rows": rows})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
