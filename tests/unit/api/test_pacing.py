"""The pacer lets at most ``per_turn`` requests start in one turn of the event loop, in arrival
order, and a request that leaves while waiting takes no one's place."""

from __future__ import annotations

import asyncio
from collections import Counter

from inferd.api.pacing import Pacer


class TurnCounter:
    """Counts the event loop's turns: a callback that reschedules itself once per turn."""

    def __init__(self):
        self.turn = 0
        self.running = True
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self):
        self.turn += 1
        if self.running:
            asyncio.get_running_loop().call_soon(self._tick)


async def test_a_burst_starts_a_few_requests_per_turn_in_arrival_order():
    pacer, turns, started = Pacer(4), TurnCounter(), []

    async def request(i: int):
        await pacer.start()
        started.append((i, turns.turn))

    await asyncio.gather(*(request(i) for i in range(30)))
    turns.running = False
    assert [i for i, _ in started] == list(range(30))  # first come, first started
    per_turn = Counter(turn for _, turn in started)
    assert max(per_turn.values()) <= 4
    assert len(per_turn) >= 8  # 30 requests took at least 8 turns
    assert pacer.waiting == 0


async def test_a_request_that_leaves_while_waiting_takes_no_place():
    pacer, started = Pacer(1), []

    async def request(i: int):
        await pacer.start()
        started.append(i)

    tasks = [asyncio.create_task(request(i)) for i in range(5)]
    await asyncio.sleep(0)  # all five have asked; one started, four wait
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert started == [0, 1, 3, 4]


async def test_an_idle_server_starts_a_request_at_once():
    pacer = Pacer(8)
    loop = asyncio.get_running_loop()
    before = loop.time()
    for _ in range(8):
        await pacer.start()  # no waiting within a turn's allowance
    assert pacer.waiting == 0 and loop.time() - before < 0.05
