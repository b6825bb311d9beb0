"""Many LLM streams in one: the deltas a replica makes for one ingress's requests go to it in one
streaming call (a *feed*), a batch per turn of the replica's event loop — under load one engine
step's tokens of every request — instead of an item on each request's own call.

Why: an item streamed through Ray Serve costs the replica and the ingress about 0.25 ms of CPU
together, whatever it carries (measured on this 2-core machine: 32 streams x 128 items, 1.05 s of
CPU as items of their own, 0.28 s as 128 batches of 32). At 32 streams that was a tenth of a core,
taken in small slices from vLLM's CPU threads, which wait for each other at every layer: chat
through Ray was 0.85-0.88 of one process.

How, per LLM deployment (``RemoteGeneration`` at the ingress, ``ModelReplica`` in the replicas):

- the ingress names itself by an *inbox* (a random id made here, never a client's value) and
  passes it with every ``generate`` call;
- a replica with a feed open from that inbox says ``FED`` on the call and puts the request's
  deltas, then its end, in the feed (``Outbox``); the call itself stays open until the request
  ends — Serve counts it, routes by it and cancels it as before (a client that leaves cancels the
  call, which stops the request in the replica) — and carries the request's error;
- a replica without one answers on the call itself, as before, and the ingress opens a feed
  (``feed(inbox)``, routed by Serve; a replica that has one says so and that call ends: the next
  answer on a call tries again), so every replica soon has one; a request answered on its call
  moves to the feed once it opens (``FED`` mid-stream: the ingress holds what the feed brings
  until its call has said so, so the deltas keep their order) — a burst after an idle spell is
  on the feed after its first tokens;
- a feed ends when nothing has been attached to it for ``IDLE_S`` (a replica Serve drains or
  scales down is not held by it), when the ingress's engine stops, or with its replica; a request
  attached to a feed that ended fails (503) in the replica, and the ingress bounds the wait for an
  end that a feed lost (``END_WAIT_S``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from inferd.errors import ModelUnavailable

log = logging.getLogger(__name__)

FED = "fed"  # a generate call's first item when the request's deltas go by the caller's feed
IDLE_S = 2.0  # a feed with nothing attached ends after this
END_WAIT_S = 10.0  # the longest an ingress waits for a request's end by the feed once its call ended
END = object()  # a request's end, in its queue at the ingress


class Failed:
    """A stream's failure, queued behind the items made before it (for its consumer to raise)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


class Outbox:
    """One ingress's feed in a replica: the deltas of the requests attached to it, queued by their
    calls and sent a batch at a time by the feed's call (``batches``)."""

    def __init__(self) -> None:
        self._queue: deque[tuple[str, Any]] = deque()  # (request id, delta | None: its end)
        self._ready = asyncio.Event()
        self.attached: set[str] = set()
        self.closed = False

    def attach(self, request_id: str) -> None:
        self.attached.add(request_id)

    def detach(self, request_id: str) -> None:
        self.attached.discard(request_id)
        self._ready.set()  # (the feed's wait: without requests it may end)

    def put(self, request_id: str, delta: Any) -> None:
        """A delta of an attached request (None: it ended); 503 once the feed has ended."""
        if self.closed:
            raise ModelUnavailable("the stream's feed to the ingress ended; retry", retry_after=1)
        self._queue.append((request_id, delta))
        self._ready.set()

    async def batches(self, idle_s: float = IDLE_S) -> AsyncIterator[list[tuple[str, list[Any], bool]]]:
        """Everything queued since the last batch, as (request id, its deltas, whether it ended);
        ends once nothing has been attached for ``idle_s``."""
        try:
            while True:
                if not self._queue:
                    self._ready.clear()
                    try:
                        async with asyncio.timeout(None if self.attached else idle_s):
                            await self._ready.wait()
                    except TimeoutError:
                        if not self.attached and not self._queue:
                            return
                    continue
                yield self._take()
        finally:
            self.closed = True

    def _take(self) -> list[tuple[str, list[Any], bool]]:
        batch: dict[str, tuple[list[Any], list[bool]]] = {}
        while self._queue:
            request_id, delta = self._queue.popleft()
            deltas, ended = batch.setdefault(request_id, ([], [False]))
            if delta is None:
                ended[0] = True
            else:
                deltas.append(delta)
        return [(request_id, deltas, ended[0]) for request_id, (deltas, ended) in batch.items()]


class Waiting:
    """A request at the ingress: the queue its deltas land in (lists of deltas, then ``END``), from
    its call and then, once the call said ``FED``, from the feed. What the feed brings before that
    is held: the call's own deltas in flight come first."""

    __slots__ = ("queue", "switched", "held")

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.switched = False
        self.held: list[tuple[list[Any], bool]] = []

    def fed(self, deltas: list[Any], ended: bool) -> None:
        if not self.switched:
            self.held.append((deltas, ended))
            return
        if deltas:
            self.queue.put_nowait(deltas)
        if ended:
            self.queue.put_nowait(END)

    def switch(self) -> None:
        """The call said ``FED``: the rest comes by the feed."""
        self.switched = True
        for deltas, ended in self.held:
            self.fed(deltas, ended)
        self.held.clear()


class Feeds:
    """An ingress's side for one LLM deployment: its inbox, the requests waiting for deltas, and
    the feeds being read (at most one being opened at a time)."""

    def __init__(self, remote: Any, model: str) -> None:
        self.remote = remote  # cluster.remote.Remote
        self.model = model
        self.inbox = uuid.uuid4().hex
        self._waiting: dict[str, Waiting] = {}
        self._opening: asyncio.Task | None = None
        self._reading: set[asyncio.Task] = set()

    def expect(self, request_id: str) -> Waiting:
        waiting = self._waiting[request_id] = Waiting()
        return waiting

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)  # (its deltas still in flight are dropped)

    def open(self) -> None:
        """A call was answered on itself: that replica has no feed from here. Open one, unless one
        is being opened (Serve routes it; where it finds a feed already, the next answer tries again)."""
        if self._opening is None:
            self._opening = task = asyncio.get_running_loop().create_task(self._read())
            self._reading.add(task)
            task.add_done_callback(self._reading.discard)

    async def _read(self) -> None:
        me = asyncio.current_task()
        response = self.remote.response("feed", self.inbox, stream=True)
        try:
            async for replica, batch in response:
                if batch is True:  # opened: another may be tried
                    self._opening = None
                    log.debug("model %s: a feed from replica %s", self.model, replica)
                    continue
                if batch is False:  # that replica has one from here
                    return
                for request_id, deltas, ended in batch:
                    waiting = self._waiting.get(request_id)
                    if waiting is not None:
                        waiting.fed(deltas, ended)
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - its requests fail in the replica, or by END_WAIT_S
            log.warning("model %s: a replica's feed broke: %r", self.model, exc)
        finally:
            if self._opening is me:
                self._opening = None

    def close(self) -> None:
        for task in list(self._reading):
            task.cancel()

