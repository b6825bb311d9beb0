"""Pacing: at most ``per_turn`` requests start their work in one turn of the event loop.

One turn of asyncio's loop runs every callback that was ready when it began. A burst of 640
requests arriving together makes 640 ready handler tasks, and their first steps (parse,
admit, validate, answer 429 or queue for the model: ~0.4 ms each on this machine) fill one
turn of ~270 ms, during which nothing else on the loop moves: not `/health`, not the next
token of a stream. Requests past ``per_turn`` in a turn wait for a later turn, in arrival
order (a FIFO of futures, no polling), so a turn stays a few milliseconds long and the burst
is served at the same total rate. Routes that must answer at once (probes, metrics) skip it.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Pacer:
    def __init__(self, per_turn: int):
        self.per_turn = max(1, per_turn)
        self._started = 0  # requests started in this turn
        self._waiting: deque[asyncio.Future] = deque()
        self._turn_scheduled = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def start(self) -> None:
        """Return when this request may start its work (at once, unless this turn is full)."""
        if self._started < self.per_turn and not self._waiting:
            self._started += 1
            self._schedule_turn()
            return
        slot = asyncio.get_running_loop().create_future()
        self._waiting.append(slot)
        self._schedule_turn()
        await slot  # a cancelled caller cancels its slot; the next turn skips it

    def _schedule_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """Runs once per turn while there is work: a fresh count, and the next waiters let go."""
        self._turn_scheduled = False
        self._started = 0
        while self._waiting and self._started < self.per_turn:
            slot = self._waiting.popleft()
            if not slot.done():
                slot.set_result(None)
                self._started += 1
        if self._started or self._waiting:
            self._schedule_turn()
