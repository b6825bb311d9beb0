"""Image embeddings throughput: CLIP in process at its best batch vs inferd (Infinity's
/embeddings, modality image), side by side in one run.

    .venv/bin/python benchmarks/vision.py

The model has CLIP ViT-B/32's shape (transformers' CLIPConfig defaults: a 12-layer, 768-wide
vision tower on 224x224 images in 32x32 patches) with random weights (no CLIP checkpoint installs
offline), built once into .bench/cache. The load: --clients (16) clients at once, each sending
--images (8) images per request (256x256 PNGs as data URLs; every system sees the same images),
one warm-up request each, then --rounds (4) each, back to back. Throughput is images per second
(the measured images over the wall time from the first measured request to the last answer).

* ``in-process``: the image processor and ``get_image_features`` on decoded images, at batch
  sizes 8, 16, 32 and 64; the best is the ceiling (target: inferd >= 0.90 of it).
* ``inferd``: ``inferd serve`` with the model (backend clip), Infinity's ``/embeddings``; it also
  decodes each PNG and its base64.

Results go to the console and ``.bench/results/vision-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from embeddings import REPO, free_port, inferd_command, inferd_ready, save_results, start_server, stop_server  # noqa: E402

MODEL = REPO / ".bench" / "cache" / "clip-vit-b32-random"


def build_model() -> Path:
    if (MODEL / "config.json").exists():
        return MODEL
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from inferd.backends.diffusion_build import _vocabulary

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer(vocab=_vocabulary(), merges=[], model_max_length=77)
    config = CLIPConfig(text_config={"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id})
    tmp = MODEL.with_name(MODEL.name + ".tmp")
    CLIPModel(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    CLIPImageProcessor().save_pretrained(tmp)  # resize 224, centre crop 224, CLIP's mean and std
    tmp.rename(MODEL)
    return MODEL


def images(n: int) -> list:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):  # smooth gradients plus noise: PNGs of a realistic size, not all alike
        x = np.linspace(0, 255, 256)
        base = (np.add.outer(x, x * ((i % 7) / 7)) / 2).astype(np.uint8)
        pixels = np.stack([base, np.roll(base, i, axis=0), base.T], axis=-1)
        pixels = np.clip(pixels + rng.integers(0, 24, pixels.shape), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(pixels))
    return out


def in_process(path: Path, pictures: list, threads: int, seconds: float) -> dict:
    import torch
    from transformers import AutoImageProcessor, CLIPModel

    torch.set_num_threads(threads)
    model = CLIPModel.from_pretrained(str(path)).eval()
    processor = AutoImageProcessor.from_pretrained(str(path), use_fast=False)
    best = {}
    for batch in (8, 16, 32, 64):
        done, started, position = 0, time.perf_counter(), 0
        while time.perf_counter() - started < seconds or done == 0:
            chunk = [pictures[(position + j) % len(pictures)] for j in range(batch)]
            position += batch
            with torch.inference_mode():
                pixels = processor(images=chunk, return_tensors="pt")["pixel_values"]
                model.get_image_features(pixel_values=pixels)
            done += batch
        rate = done / (time.perf_counter() - started)
        best[batch] = rate
        print(f"  in-process batch {batch:3d}: {rate:6.1f} images/s", flush=True)
    size = max(best, key=best.get)
    return {"system": "in-process", "images_per_s": best[size], "best_batch": size, "by_batch": best}


async def load(url: str, bodies: list[bytes], clients: int, rounds: int) -> dict:
    """Each client sends one warm-up request, then --rounds requests back to back; throughput is
    the measured rounds' images over the wall time from their start to the last answer (every
    client keeps a request in flight the whole time, so the server is never short of work)."""
    counted = {"images": 0, "errors": 0}
    latencies = []

    async def client(k: int, session, n: int, record: bool):
        for r in range(n):
            began = time.perf_counter()
            async with session.post(url, data=bodies[(k + r * clients) % len(bodies)],
                                    headers={"Content-Type": "application/json"}) as response:
                body = await response.read()
                ok = response.status == 200
            if not record:
                continue
            if ok:
                counted["images"] += len(json.loads(body)["data"])
                latencies.append(time.perf_counter() - began)
            else:
                counted["errors"] += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(k, session, 1, False) for k in range(clients)))
        started = time.perf_counter()
        await asyncio.gather(*(client(k, session, rounds, True) for k in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"images_per_s": counted["images"] / wall, "errors": counted["errors"], "wall_s": wall,
            "p50_s": latencies[len(latencies) // 2] if latencies else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="measured requests per client, after one warm-up")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    path = build_model()
    pictures = images(64)
    urls = []
    for picture in pictures:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    bodies = [json.dumps({"model": "bench/clip", "modality": "image",
                          "input": [urls[(i * args.images + j) % len(urls)] for j in range(args.images)]}).encode()
              for i in range(16)]
    print(f"vision: CLIP ViT-B/32 shape, random weights ({path}); {args.clients} clients x {args.images} images "
          f"per request", flush=True)
    rows = [in_process(path, pictures, args.threads, seconds=6)]
    failed = False
    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        catalog = work / "catalog.yaml"
        catalog.write_text(yaml.safe_dump({"models": [{
            "id": "bench/clip", "task": "embeddings", "backend": "clip", "source": str(path),
            "limits": {"max_batch_size": 64, "max_batch_tokens": 65536, "queue_size": 4096}}]}))
        try:
            proc = start_server("inferd", inferd_command(port, catalog, work / "inferd"),
                                work / "inferd.log", f"http://127.0.0.1:{port}/health", inferd_ready, 300)
        except RuntimeError as exc:
            print(f"  inferd failed to start: {exc}")
            return 1
        try:
            result = asyncio.run(load(f"http://127.0.0.1:{port}/embeddings", bodies, args.clients, args.rounds))
            rows.append({"system": "inferd", **result})
            print(f"  inferd {args.clients} x {args.images}: {result['images_per_s']:6.1f} images/s "
                  f"(p50 {result['p50_s'] or float('nan'):.2f} s, {result['errors']} errors, {result['wall_s']:.1f} s)", flush=True)
            failed = result["errors"] > 0
        finally:
            stop_server(proc)
    by = {r["system"]: r for r in rows}
    if "inferd" in by:
        print(f"\nratios\n  inferd / in-process (best batch {by['in-process']['best_batch']}): "
              f"{by['inferd']['images_per_s'] / by['in-process']['images_per_s']:.2f}")
    save_results("vision", {"args": vars(args), "rows": rows})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
