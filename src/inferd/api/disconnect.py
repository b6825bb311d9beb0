"""A client that disconnects stops its own work.

``await cancellable(request, work)`` runs ``work`` in the handler's own task and cancels
it when the client goes away; cancellation reaches the engine, which drops the request's
queued inputs before they cost a forward pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from inferd.errors import ClientDisconnected

T = TypeVar("T")


async def _watch(request: Request, task: asyncio.Task, gone: asyncio.Event) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            task.cancel()
            return


async def cancellable(request: Request, work: Awaitable[T]) -> T:
    task = asyncio.current_task()
    assert task is not None
    gone = asyncio.Event()
    watcher = asyncio.create_task(_watch(request, task, gone))
    try:
        return await work
    except asyncio.CancelledError:
        if gone.is_set():
            task.uncancel()
            raise ClientDisconnected("the client disconnected") from None
        raise
    finally:
        watcher.cancel()
