"""Spending limits: what a scoped token, or an account this month, has spent, kept exact while
requests run, so a stream is stopped at its limit.

Spent = the stored usage rows (summed from the database when a key is first used, and again
every ``refresh_s``, after this process's own rows are written) + what this process charged
since + what its running requests have consumed so far. Streams re-check after every decode
step, so the bill passes a limit by at most the step that reached it (one step per running
stream of that token). Another process's spending is seen within ``refresh_s`` plus its usage
flush interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from inferd.accounts.billing import spent
from inferd.accounts.db import Database


def month_key(account_id: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"acct:{account_id}:{now.year:04d}.{now.month:02d}"


def scope_key(scope_id: str) -> str:
    return f"scope:{scope_id}"


class SpendLedger:
    def __init__(self, db: Database, flush: Callable[[], Awaitable[int]], refresh_s: float = 5.0):
        self._db = db
        self._flush = flush  # writes this process's buffered usage rows (UsageRecorder.flush)
        self._refresh = refresh_s
        self._base: dict[str, tuple[int, float]] = {}  # key -> (stored sum, when read)
        self._since: dict[str, int] = {}  # charged here since the stored sum was read
        self._running: dict[str, dict[int, int]] = {}  # key -> {id(metered): consumed so far}
        self._priming: dict[str, asyncio.Future] = {}

    async def prime(self, key: str) -> None:
        """Make sure the stored sum of ``key`` is at most ``refresh_s`` old (one query at a time per key)."""
        known = self._base.get(key)
        if known is not None and time.monotonic() - known[1] < self._refresh:
            return
        pending = self._priming.get(key)
        if pending is None:
            pending = self._priming[key] = asyncio.ensure_future(self._read(key))
            pending.add_done_callback(lambda _done: self._priming.pop(key, None))
        await asyncio.shield(pending)

    async def _read(self, key: str) -> None:
        # charges so far are in the recorder's buffer or written: the flush writes them all.
        # Charges from here on may or may not be in what is read: counting them twice errs on
        # the side of stopping early.
        since = self._since.get(key, 0)
        await self._flush()
        stored = await self._stored(key)
        self._base[key] = (stored, time.monotonic())
        self._since[key] = self._since.get(key, 0) - since

    async def _stored(self, key: str) -> int:
        kind, _, rest = key.partition(":")
        if kind == "scope":
            return await spent(self._db, scope_id=rest)
        account, _, period = rest.rpartition(":")
        year, month = map(int, period.split("."))
        return await spent(self._db, account_id=account, month=(year, month))

    def spent(self, key: str) -> int:
        base = self._base.get(key, (0, 0.0))[0]
        return base + self._since.get(key, 0) + sum(self._running.get(key, {}).values())

    def running(self, key: str, ticket: int, nano: int) -> None:
        """A running request's consumption so far."""
        self._running.setdefault(key, {})[ticket] = nano

    def settle(self, key: str, ticket: int, nano: int) -> None:
        """A request ended, charged ``nano``: it leaves the running set and joins the charged."""
        running = self._running.get(key)
        if running is not None:
            running.pop(ticket, None)
            if not running:
                del self._running[key]
        self._since[key] = self._since.get(key, 0) + nano


def spend_limits(token) -> list[tuple[str, int, str]]:
    """(ledger key, limit in nano-dollars, what it is) for each spending limit on a token
    (a ``TokenInfo``): its account's monthly limit, and its scope's."""
    limits = []
    if token.spending_limit_nano_usd is not None:
        limits.append((month_key(token.account_id), token.spending_limit_nano_usd,
                       "this account's spending limit for the month"))
    if token.scope is not None and token.scope.spending_limit_nano_usd is not None:
        limits.append((scope_key(token.scope.scope_id), token.scope.spending_limit_nano_usd,
                       "this scoped token's spending limit"))
    return limits
