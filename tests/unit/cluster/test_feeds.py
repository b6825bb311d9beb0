"""A replica's side of a feed (``cluster.feeds.Outbox``): batches by request, held open by its
requests, ended when idle; a request on a feed that ended fails with 503 (no Ray started)."""

from __future__ import annotations

import asyncio

import pytest

from inferd.cluster.feeds import Outbox
from inferd.errors import ModelUnavailable


def test_a_turns_deltas_go_as_one_batch_grouped_by_request():
    async def main():
        outbox = Outbox()
        outbox.attach("a")
        outbox.attach("b")
        batches = outbox.batches(idle_s=0.05)
        outbox.put("a", 1)
        outbox.put("b", 10)
        outbox.put("a", 2)
        outbox.put("a", None)  # a ended
        first = await anext(batches)
        assert first == [("a", [1, 2], True), ("b", [10], False)]
        outbox.detach("a")

        async def later():
            await asyncio.sleep(0.1)  # longer than idle_s: b is attached, so the feed waits for it
            outbox.put("b", 11)
            outbox.put("b", None)
            outbox.detach("b")

        task = asyncio.create_task(later())
        assert await anext(batches) == [("b", [11], True)]
        await task
        # nothing attached for idle_s: the feed ends, and a put after that is refused
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(batches), 2)
        assert outbox.closed
        with pytest.raises(ModelUnavailable) as refused:
            outbox.put("c", 1)
        assert refused.value.status == 503 and refused.value.retry_after

    asyncio.run(main())


def test_a_request_attached_while_idle_keeps_the_feed():
    async def main():
        outbox = Outbox()
        batches = outbox.batches(idle_s=0.2)
        waiting = asyncio.create_task(anext(batches))
        await asyncio.sleep(0.05)
        outbox.attach("a")  # before idle_s: the timeout that fires finds it attached
        await asyncio.sleep(0.3)
        assert not waiting.done() and not outbox.closed
        outbox.put("a", 5)
        assert await waiting == [("a", [5], False)]
        waiting = asyncio.create_task(anext(batches))
        outbox.detach("a")  # without its end (cancelled): the feed may end
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 2)

    asyncio.run(main())
