"""Rerank throughput: each reranker backend in process, through inferd, and the cross-encoder
through Infinity, side by side in one run.

    .venv/bin/python benchmarks/rerank.py                         # everything
    .venv/bin/python benchmarks/rerank.py --backends cross-encoder --rounds 2

The load: one query against --docs (100) documents per request, --clients (16) clients at once,
each sending --rounds requests one after the other (after one warm-up request each).
pairs/s = every pair scored / wall time of the rounds.

* ``in-process``: the same pairs scored in this process with no server, at the best of several
  batch sizes: ``CrossEncoder.predict`` for the cross-encoder, ``SentenceTransformer.encode``
  plus cosines for the bi-encoder, inferd's own LM-judge backend for the judge (no library
  scores a causal LM that way). It is the ceiling each server is held to (target >= 0.90).
* ``inferd``: one ``inferd serve`` with the three rerankers, Infinity's ``/rerank`` dialect.
* ``infinity``: Infinity (``make bench-peers``) serving the same cross-encoder directory.

Models: no cross-encoder ships in a package that installs here (../shared/MODELS.md), so the
cross-encoder is ms-marco-MiniLM-L-6's architecture (6 layers, 384 wide) with random weights
and MiniLM's tokenizer, built once under .bench/models: same compute as the real one, scores
meaningless, which a throughput test does not read. The bi-encoder is the shipped MiniLM. The
judge is a random Llama of 4 layers, 256 wide, with SmolLM2's tokenizer (``--judge smollm2``
runs the real SmolLM2-135M instead: ~7 pairs/s here, so a full load takes minutes).
Results go to the console and ``.bench/results/rerank-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embeddings import (  # noqa: E402
    INFINITY_BIN,
    REPO,
    free_port,
    inferd_ready,
    make_corpus,
    model_path,
    start_server,
    stop_server,
)

MODELS = REPO / ".bench" / "models"
QUERY = "what is the best way to keep the house warm in winter without spending too much"
BATCHES = (16, 32, 64, 128)
NAMES = {"cross-encoder": "bench/cross-encoder", "bi-encoder": "bench/bi-encoder", "lm-judge": "bench/lm-judge"}


def cross_encoder_dir() -> Path:
    """ms-marco-MiniLM-L-6-v2's shape with random weights and MiniLM's tokenizer (built once)."""
    out = MODELS / "cross-encoder-minilm-l6-random"
    if not (out / "config.json").exists():
        import torch
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        tokenizer = AutoTokenizer.from_pretrained(model_path())
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                            intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, num_labels=1)
        torch.manual_seed(0)
        BertForSequenceClassification(config).eval().save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def judge_dir(which: str) -> Path:
    from generation import checkpoint

    if which == "smollm2":
        return checkpoint()
    out = MODELS / "judge-llama-4x256-random"
    if not (out / "config.json").exists():
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(checkpoint())
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                             num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                             tie_word_embeddings=True)
        torch.manual_seed(0)
        LlamaForCausalLM(config).eval().save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def sources(args) -> dict[str, Path]:
    paths = {"cross-encoder": cross_encoder_dir(), "bi-encoder": Path(model_path()), "lm-judge": judge_dir(args.judge)}
    return {k: v for k, v in paths.items() if k in args.backends}


# --- in process ----------------------------------------------------------------------------------

def in_process(backend: str, path: Path, docs: list[str], repeats: int) -> dict[int, float]:
    """pairs/s scoring `repeats` x the pairs in this process, by batch size."""
    pairs = [(QUERY, d) for d in docs] * repeats
    if backend == "cross-encoder":
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(path), device="cpu")
        score = lambda b: model.predict(pairs, batch_size=b)  # noqa: E731
    elif backend == "bi-encoder":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(path), device="cpu")

        def score(b):
            for start in range(0, len(pairs), len(docs)):  # one query + its documents, as a request
                vectors = model.encode([QUERY, *docs], batch_size=b, normalize_embeddings=True)
                _ = vectors[1:] @ vectors[0]
    else:
        from inferd.backends.base import RerankPair
        from inferd.backends.lm_judge import LMJudgeBackend
        from inferd.catalog.spec import ModelSpec

        spec = ModelSpec(id="judge", task="reranker", backend="lm-judge", source=str(path))
        model = LMJudgeBackend(spec, str(path), {})
        model.load()
        ids = [t.ids for t in model.tokenize([RerankPair(q, d) for q, d in pairs])]

        def score(b):
            ordered = sorted(ids, key=len)  # what any sensible batcher does
            for start in range(0, len(ordered), b):
                model.forward(ordered[start:start + b])
    score(32)  # warm-up
    rates = {}
    for batch in BATCHES:
        began = time.perf_counter()
        score(batch)
        rates[batch] = len(pairs) / (time.perf_counter() - began)
        print(f"  in-process {backend:14s} batch {batch:4d}: {rates[batch]:8.1f} pairs/s", flush=True)
    model = None  # noqa: F841 - free it before the servers start
    gc.collect()
    return rates


# --- over HTTP -----------------------------------------------------------------------------------

async def load(url: str, model: str, docs: list[str], clients: int, rounds: int) -> dict:
    body = {"model": model, "query": QUERY, "documents": docs}
    latencies: list[float] = []

    async def client(session):
        for _ in range(rounds):
            sent = time.perf_counter()
            async with session.post(url, json=body) as response:
                payload = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
            results = json.loads(payload)["results"]
            if len(results) != len(docs):
                raise RuntimeError(f"{len(results)} results for {len(docs)} documents")
            latencies.append(time.perf_counter() - sent)

    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client_warm(session, url, body) for _ in range(clients)))
        began = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {"pairs_s": clients * rounds * len(docs) / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]}


async def client_warm(session, url, body) -> None:
    async with session.post(url, json={**body, "documents": body["documents"][:8]}) as response:
        await response.read()


def catalog(path: Path, paths: dict[str, Path]) -> Path:
    import yaml

    limits = {"max_batch_size": 64, "max_batch_tokens": 16384, "queue_size": 100000, "max_inputs": 2048}
    entries = [{"id": NAMES[kind], "task": "reranker", "backend": kind, "source": str(source), "limits": limits}
               for kind, source in paths.items()]
    path.write_text(yaml.safe_dump({"models": entries}))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="cross-encoder,bi-encoder,lm-judge")
    parser.add_argument("--systems", default="in-process,inferd,infinity")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--judge", choices=("tiny", "smollm2"), default="tiny")
    args = parser.parse_args(argv)
    args.backends, args.systems = args.backends.split(","), args.systems.split(",")
    docs = make_corpus(args.docs, seed=1)
    paths = sources(args)
    rows: list[dict] = []
    failed = False
    best: dict[str, float] = {}
    if "in-process" in args.systems:
        for kind, path in paths.items():
            rates = in_process(kind, path, docs, args.clients * args.rounds // 4 or 1)
            batch = max(rates, key=rates.get)
            best[kind] = rates[batch]
            rows.append({"system": "in-process", "backend": kind, "pairs_s": rates[batch], "batch": batch})
    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp:
        work = Path(tmp)
        plans = []
        if "inferd" in args.systems:
            port = free_port()
            plans.append({"name": "inferd", "url": f"http://127.0.0.1:{port}/rerank", "models": list(paths),
                          "health": f"http://127.0.0.1:{port}/health", "ready": inferd_ready,
                          "command": [str(REPO / ".venv/bin/inferd"), "serve", "--worker", "--no-auth", "--port", str(port),
                                      "--catalog", str(catalog(work / "catalog.yaml", paths)),
                                      "--data-dir", str(work / "inferd")]})
        if "infinity" in args.systems and "cross-encoder" in paths:
            if not INFINITY_BIN.exists():
                print("infinity: SKIPPED, the peer is not installed; `make bench-peers` installs it")
            else:
                port = free_port()
                plans.append({"name": "infinity", "url": f"http://127.0.0.1:{port}/rerank", "models": ["cross-encoder"],
                              "health": f"http://127.0.0.1:{port}/health", "ready": lambda body: True,
                              "command": [str(INFINITY_BIN), "v2", "--model-id", str(paths["cross-encoder"]),
                                          "--served-model-name", NAMES["cross-encoder"], "--engine", "torch",
                                          "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]})
        for plan in plans:
            try:
                proc = start_server(plan["name"], plan["command"], work / f"{plan['name']}.log", plan["health"],
                                    plan["ready"], 300)
            except RuntimeError as exc:
                print(f"  {plan['name']} failed to start: {exc}")
                failed = True
                continue
            try:
                for kind in plan["models"]:
                    result = asyncio.run(load(plan["url"], NAMES[kind], docs, args.clients, args.rounds))
                    rows.append({"system": plan["name"], "backend": kind, **result})
                    print(f"  {plan['name']:10s} {kind:14s} {args.clients} clients x {args.docs} docs: "
                          f"{result['pairs_s']:8.1f} pairs/s  p50 {result['p50_ms']:7.0f} ms  "
                          f"p99 {result['p99_ms']:7.0f} ms", flush=True)
            except Exception as exc:  # noqa: BLE001 - report, go on with the next system
                print(f"  {plan['name']} failed: {exc}")
                failed = True
            finally:
                stop_server(proc)
    by = {(r["system"], r["backend"]): r for r in rows}
    print("\nratios")
    for kind in paths:
        mine = by.get(("inferd", kind))
        if mine and kind in best:
            print(f"  {kind:14s} inferd / in-process (best batch) {mine['pairs_s'] / best[kind]:.2f}")
        theirs = by.get(("infinity", kind))
        if mine and theirs:
            print(f"  {kind:14s} inferd / infinity {mine['pairs_s'] / theirs['pairs_s']:.2f}x")
    out = REPO / ".bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"rerank-{stamp}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
