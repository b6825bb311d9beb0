"""Continuous batching for the transformers runtime: a small iteration-level scheduler.

One scheduler thread owns the model. Each iteration it
  1. admits waiting requests while there are free slots (``max_batch_size`` sequences;
     a request with ``n`` choices takes ``n``), dropping any already aborted,
  2. retires sequences whose client went away (their KV rows are cut out at once),
  3. runs one decode step for the running batch and one prefill for the admitted prompts
     (all of them in one left-padded forward; ``n`` choices share one prefill),
  4. samples every row with its own parameters (``engine/sampling.py``), detokenises,
     applies stop strings, EOS and max_tokens, and retires finished rows,
  5. hands the step's output to the event loop in one ``call_soon_threadsafe``.

Why not transformers' ``ContinuousBatchingManager``: in transformers 5.19 it takes
temperature, top-k and top-p per request but one seed for the whole manager, and no
min-p, repetition/presence/frequency penalties or top-k logprobs per request; inferd
needs every one of them per request (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import torch

from inferd.catalog import ModelRef
from inferd.engine.base import EngineObserver, EngineState, NullObserver
from inferd.engine.detokenize import TextStream
from inferd.engine.grammar import BudgetedMatcher, GrammarFactory, masks
from inferd.engine.generation import (
    GenerationEngine,
    GenerationRequest,
    SequenceDelta,
    TokenLogprob,
)
from inferd.engine.sampling import SampleRow, new_generator, sample, top_logprobs
from inferd.errors import EngineError, InferdError, InvalidRequest, ModelUnavailable, Overloaded

log = logging.getLogger(__name__)


class _Request:
    __slots__ = ("request", "queue", "loop", "seqs", "aborted")

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = loop
        self.seqs: list[_Seq] = []
        self.aborted = False


class _Seq:
    __slots__ = ("req", "index", "row", "text", "next_token", "pending_ids", "pending_logprobs", "first",
                 "finish_reason", "prompt_logprobs", "matcher")

    def __init__(self, req: _Request, index: int, tokenizer, prompt_logprobs, matcher=None):
        params = req.request.params
        self.req = req
        self.index = index
        seed = None if params.seed is None else params.seed + index
        self.row = SampleRow(params, new_generator(seed), req.request.prompt_ids)
        self.text = TextStream(tokenizer, params.stop)
        self.next_token = -1
        self.pending_ids: list[int] = []
        self.pending_logprobs: list[TokenLogprob] = []
        self.first = True
        self.finish_reason: str | None = None
        self.prompt_logprobs = prompt_logprobs
        self.matcher = matcher  # BudgetedMatcher when the output must match a grammar


class BatchGenerationEngine(GenerationEngine):
    def __init__(self, ref: ModelRef, backend, observer: EngineObserver | None = None):
        super().__init__(ref)
        self.backend = backend
        self.observer = observer or NullObserver()
        self.max_num_seqs = ref.spec.limits.max_batch_size
        self.queue_size = ref.spec.limits.queue_size
        self._waiting: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._running: list[_Seq] = []
        self._live: set[_Request] = set()  # every request a caller awaits, wherever it is
        self._grammars: GrammarFactory | None = None  # built by start()

    # --- lifecycle

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.backend.load)
        except Exception as exc:  # noqa: BLE001 - reported through the engine's state
            log.exception("model %s failed to load", self.ref.key)
            self.state, self.error = EngineState.FAILED, f"{type(exc).__name__}: {exc}"
            return
        self.tokenizer = self.backend.tokenizer
        self._rust = self.tokenizer.backend_tokenizer
        self.context_length = self.backend.context_length
        self.eos_token_ids = self.backend.eos_token_ids
        # structured output's tokenizer (~1 s), before the first request
        self._grammars = await asyncio.to_thread(GrammarFactory, self.tokenizer, self.backend.vocab_size,
                                                 self.eos_token_ids)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"lm-{self.name}", daemon=True)
        self._thread.start()
        self.state = EngineState.READY

    async def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        gone = ModelUnavailable(f"model {self.name} is unavailable: {self.error or 'it stopped'}", retry_after=5)
        for req in self._live:
            req.loop.call_soon_threadsafe(req.queue.put_nowait, gone)
        self._waiting.clear()
        self._running = []
        if self.state is EngineState.READY:
            self.state = EngineState.STOPPED
        self.backend.close()

    def check(self) -> str | None:
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            return "its scheduler thread died"
        return None

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "waiting": len(self._waiting), "running": len(self._running)}

    def grammars(self) -> GrammarFactory:
        """The llguidance tokenizer for this model (built when the engine starts)."""
        return self._grammars

    def _matcher(self, req: _Request):
        constraint = req.request.params.constraint
        if constraint is None:
            return None
        return BudgetedMatcher(self._grammars, constraint, req.request.params.max_tokens)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one engine per model, lives as long as the server
    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    # --- requests

    async def generate(self, request: GenerationRequest) -> AsyncIterator[SequenceDelta]:
        self.ensure_ready()
        if request.adapter is not None:
            raise InvalidRequest(f"model {self.name} runs on the transformers runtime, which serves no LoRA "
                                 "adapters; adapters need a base model on vLLM")
        if len(self._waiting) >= self.queue_size:
            raise Overloaded(f"model {self.name} has {len(self._waiting)} requests waiting; retry shortly",
                             retry_after=1)
        req = _Request(request, asyncio.get_running_loop())
        with self._cond:
            self._waiting.append(req)
            self._cond.notify()
        self._live.add(req)
        self.observer.queue_depth(self.name, len(self._waiting))
        # counted here, as the deltas are read: the thread runs ahead of this consumer
        unfinished = request.params.n
        try:
            while unfinished:
                item = await req.queue.get()
                if isinstance(item, BaseException):
                    raise item
                for delta in item:
                    unfinished -= delta.finish_reason is not None
                    yield delta
        finally:
            self._live.discard(req)
            if unfinished:
                self._abort(req)

    async def abort(self, request_id: str) -> None:
        for req in list(self._waiting) + [s.req for s in self._running]:
            if req.request.request_id == request_id:
                self._abort(req)

    def _abort(self, req: _Request) -> None:
        with self._cond:
            req.aborted = True
            self._cond.notify()

    # --- the scheduler thread

    def _run(self) -> None:
        batch = None
        while True:
            with self._cond:
                while not self._stopping and not self._running and not self._waiting:
                    self._cond.wait()
                if self._stopping:
                    return
                admitted = self._admit()
            try:
                batch = self._step(batch, admitted)
            except Exception:  # noqa: BLE001 - find the request that fails; the others go on
                log.exception("generation step failed on %s; retrying its requests one by one", self.name)
                batch = self._isolate(admitted)
            self.observer.queue_depth(self.name, len(self._waiting))
            self.observer.running(self.name, len(self._running))

    def _isolate(self, admitted: list[_Request]):
        """After a failed step: each request of it runs one step alone (its running sequences'
        cache recomputed from prompt and output, a fresh one prefilled); the one that raises
        fails, the others are merged back into one batch. Returns that batch."""
        requests = list({id(s.req): s.req for s in self._running}.values())
        fresh = set(map(id, admitted))
        merged, survivors = None, []
        for req in requests + admitted:
            live = [s for s in req.seqs if s.finish_reason is None] if id(req) not in fresh else []
            self._running = live
            try:
                cache = self._recompute(live) if live else None
                cache = self._step(cache, [req] if id(req) in fresh else [])
            except Exception as exc:  # noqa: BLE001 - this request is the one that fails
                log.exception("request %s fails the generation step; failing it alone", req.request.request_id)
                error = exc if isinstance(exc, InferdError) else EngineError(f"generation failed: {exc}")
                req.loop.call_soon_threadsafe(req.queue.put_nowait, error)
                continue
            if self._running:
                merged = self.backend.merge(merged, cache)
                survivors += self._running
        self._running = survivors
        return merged

    def _recompute(self, seqs: list[_Seq]):
        """A fresh cache for running sequences: prompt and output so far, less the token the next
        step feeds in."""
        cache, _ = self.backend.prefill([s.req.request.prompt_ids + s.row.output_ids[:-1] for s in seqs])
        return cache

    def _admit(self) -> list[_Request]:
        admitted, free = [], self.max_num_seqs - len(self._running)
        while self._waiting and (self._waiting[0].request.params.n <= free or not (self._running or admitted)):
            req = self._waiting.popleft()
            if req.aborted:
                continue
            admitted.append(req)
            free -= req.request.params.n
        return admitted

    def _step(self, batch, admitted: list[_Request]):
        started = time.perf_counter()
        backend = self.backend
        # 2. retire sequences whose request was aborted
        keep = [i for i, s in enumerate(self._running) if not s.req.aborted]
        if len(keep) < len(self._running):
            batch = backend.select(batch, keep)
            self._running = [self._running[i] for i in keep]
        # 3. one decode step for the running rows, one prefill for the admitted prompts
        parts, seqs = [], list(self._running)
        if self._running:
            parts.append(backend.decode(batch, [s.next_token for s in self._running]))
        fresh = None
        if admitted:
            fresh, logits = self._prefill(admitted)
            parts.append(logits)
            seqs += [s for req in admitted for s in req.seqs]
        if not seqs:
            return batch
        logits = torch.cat(parts) if len(parts) > 1 else parts[0]
        # 4. grammar masks, sample, detokenise, stop
        bound = [seq for seq in seqs if seq.matcher is not None]
        if bound:
            allowed = masks([s.matcher for s in bound], [len(s.row.output_ids) for s in bound], logits.shape[-1])
            for seq, mask in zip(bound, allowed, strict=True):
                seq.row.allowed = mask
        tokens, logprobs = sample(logits, [s.row for s in seqs], self.token_text)
        out: dict[int, tuple[_Request, list[SequenceDelta]]] = {}
        keep = []
        for i, (seq, token, lp) in enumerate(zip(seqs, tokens, logprobs, strict=True)):
            self._advance(seq, token, lp)
            delta = self._delta(seq)
            if delta is not None:
                out.setdefault(id(seq.req), (seq.req, []))[1].append(delta)
            if seq.finish_reason is None:
                keep.append(i)
        if fresh is not None:
            batch = backend.merge(batch, fresh)
        if len(keep) < len(seqs):
            batch = backend.select(batch, keep)
        self._running = [seqs[i] for i in keep]
        for req, deltas in out.values():
            req.loop.call_soon_threadsafe(req.queue.put_nowait, deltas)
        self.observer.batch_done(self.name, len(seqs), len(seqs), time.perf_counter() - started)
        return batch

    def _prefill(self, admitted: list[_Request]):
        backend = self.backend
        want_prompt = any(r.request.params.prompt_logprobs is not None for r in admitted)
        fresh, logits = backend.prefill([r.request.prompt_ids for r in admitted], all_logits=want_prompt)
        if want_prompt:
            width = logits.shape[1]
            for r, req in enumerate(admitted):
                k = req.request.params.prompt_logprobs
                prompt_lp = None
                if k is not None:
                    ids = req.request.prompt_ids
                    rows = logits[r, width - len(ids): width - 1].log_softmax(-1)
                    prompt_lp = [None, *top_logprobs(rows, ids[1:], [k] * (len(ids) - 1), self.token_text)]
                req.seqs = [_Seq(req, j, self._rust, prompt_lp, self._matcher(req)) for j in range(req.request.params.n)]
            logits = logits[:, -1, :]
        else:
            for req in admitted:
                req.seqs = [_Seq(req, j, self._rust, None, self._matcher(req)) for j in range(req.request.params.n)]
        counts = [r.request.params.n for r in admitted]
        if any(c > 1 for c in counts):
            fresh = backend.repeat(fresh, counts)
            logits = logits.repeat_interleave(torch.tensor(counts), dim=0)
        return fresh, logits

    def _advance(self, seq: _Seq, token: int, logprob: TokenLogprob | None) -> None:
        seq.next_token = token
        seq.row.output_ids.append(token)
        seq.pending_ids.append(token)
        if logprob is not None:
            seq.pending_logprobs.append(logprob)
        params = seq.row.params
        grammar_done = False
        if seq.matcher is not None:
            seq.matcher.consume(token)
            grammar_done = seq.matcher.done
        eos = token in self.eos_token_ids and not params.ignore_eos
        if seq.req.aborted:
            seq.finish_reason = "abort"
        elif eos:
            seq.finish_reason = "stop"
        elif seq.text.push(token) or grammar_done:  # a grammar's last token is text too
            seq.finish_reason = "stop"
        elif len(seq.row.output_ids) >= params.max_tokens:
            seq.finish_reason = "length"

    def _delta(self, seq: _Seq) -> SequenceDelta | None:
        finished = seq.finish_reason is not None
        if not (finished or seq.row.params.stream):
            return None
        delta = SequenceDelta(
            index=seq.index,
            text=seq.text.take(finished),
            token_ids=seq.pending_ids,
            logprobs=seq.pending_logprobs if seq.row.params.logprobs is not None else None,
            finish_reason=seq.finish_reason,
            stop_sequence=seq.text.stopped_by if finished else None,
            prompt_logprobs=seq.prompt_logprobs if seq.first else None,
        )
        seq.first = False
        seq.pending_ids, seq.pending_logprobs = [], []
        return delta
