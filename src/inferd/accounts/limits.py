"""Rate limits: concurrent requests per model (per account, and per token where the token has
its own), and tokens per minute (per account, and per token).

Concurrency is counted exactly:
- ``LocalSlots`` — in this process's memory: exact, and free, when one process serves the
  database (the default with SQLite);
- ``SharedSlots`` — in the database, for several processes on one database (the default with
  PostgreSQL). Each process keeps one row per key, ``rate_holds(key, holder, n, expires_at)``;
  admitting takes the key's lock (PostgreSQL: a transaction advisory lock; SQLite: the
  database's writer lock, taken first), counts the other processes' live holds, and writes its
  own. While the database is unreachable each process admits within its own count (as it
  serves tokens it verified before, and journals usage), and writes its rows once it is back. The requests that arrive for one key in one turn of the event loop share that one
  transaction; releases are written in the next, batched the same way. A process's rows carry a
  lease it renews every third of ``lease_s``: the slots of a process that died free themselves
  within ``lease_s``.

Tokens per minute are counted from what requests consumed (input and output tokens) over the
last minute: a request is admitted while the minute's count is under the limit (one request may
take it past). ``TokensPerMinute`` counts this process's requests over a sliding minute (one
process on the database); ``SharedTokensPerMinute`` adds the other processes' (several on one
database): each process writes what its requests consumed once a second, per key, in 5-second
buckets (``rate_tokens(key, holder, bucket, tokens)``), and reads the others' last minute for a
key at most once a second when it admits a request for it; the buckets that overlap the minute
count whole. A process sees another's tokens within about two seconds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, delete, func, insert, or_, select, text, update

from inferd.accounts.db import Database
from inferd.accounts.models import RateHold, RateTokens, utcnow
from inferd.errors import Overloaded

log = logging.getLogger(__name__)

RATE_LIMITED = "Rate limited"
_T = RateHold.__table__
_M = RateTokens.__table__


def refused(limit: int) -> Overloaded:
    return Overloaded(f"{RATE_LIMITED}: {limit} concurrent requests", retry_after=1)


@dataclass(slots=True)
class Hold:
    """Slots one request holds (one per key); give them back with ``release``."""

    keys: list[str] = field(default_factory=list)


class LocalSlots:
    """Exact counts in this process."""

    def __init__(self) -> None:
        self._held: dict[str, int] = defaultdict(int)

    async def acquire(self, wanted: list[tuple[str, int]]) -> Hold:
        for key, limit in wanted:
            if self._held[key] >= limit:
                raise refused(limit)
        for key, _ in wanted:
            self._held[key] += 1
        return Hold([key for key, _ in wanted])

    def release(self, hold: Hold) -> None:
        for key in hold.keys:
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


@dataclass(slots=True)
class _Ask:
    limit: int
    granted: asyncio.Future


class SharedSlots:
    """Counts in the database, shared by every process on it (see the module's notes)."""

    RETRY_S = 5.0

    def __init__(self, db: Database, lease_s: float = 15.0):
        self._db = db
        self._lease = lease_s
        self.holder = "p_" + secrets.token_hex(8)
        self._held: dict[str, int] = defaultdict(int)  # this process's holds, exact
        self._asks: dict[str, list[_Ask]] = {}  # per key: admissions waiting for the next write
        self._dirty: set[str] = set()  # keys whose row must be lowered to ``_held`` (releases)
        self._writer: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._renewer: asyncio.Task | None = None
        self._stopping = False
        self._down_until = 0.0  # the database was unreachable: decide here until then

    async def start(self) -> None:
        self._stopping = False
        self._writer = asyncio.create_task(self._write_loop(), name="rate-slots")
        self._renewer = asyncio.create_task(self._renew_loop(), name="rate-slot-leases")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in (self._writer, self._renewer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for waiting in self._asks.values():  # nobody will write them now
            for ask in waiting:
                if not ask.granted.done():
                    ask.granted.set_result(False)
        self._asks.clear()
        try:  # give every slot back at once rather than when the lease runs out
            async with self._db.engine.begin() as conn:
                await conn.execute(delete(_T).where(_T.c.holder == self.holder))
        except Exception as exc:  # noqa: BLE001 - the lease frees them anyway
            log.warning("could not give back rate-limit slots at stop (%s); they free themselves in %.0f s",
                        type(exc).__name__, self._lease)

    async def acquire(self, wanted: list[tuple[str, int]]) -> Hold:
        hold = Hold()
        try:
            for key, limit in wanted:
                ask = _Ask(limit, asyncio.get_running_loop().create_future())
                self._asks.setdefault(key, []).append(ask)
                self._wake.set()
                try:
                    granted = await asyncio.shield(ask.granted)
                except asyncio.CancelledError:  # the client left while waiting
                    if ask.granted.done() and not ask.granted.cancelled() and ask.granted.result():
                        hold.keys.append(key)  # granted as it left: given back below
                    else:
                        ask.granted.cancel()  # the writer skips it (or gives back what it grants)
                    raise
                if not granted:
                    raise refused(limit)
                hold.keys.append(key)
        except BaseException:
            self.release(hold)
            raise
        return hold

    def release(self, hold: Hold) -> None:
        for key in hold.keys:
            self._held[key] -= 1
            self._held[key] = max(0, self._held[key])
            self._dirty.add(key)
        if hold.keys:
            self._wake.set()

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    async def _write_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let this turn's admissions join the write
            asks, self._asks = self._asks, {}
            dirty, self._dirty = self._dirty - set(asks), set()
            if time.monotonic() < self._down_until:  # the database was unreachable a moment ago
                self._decide_here(asks, dirty)
                continue
            try:
                await self._write(asks, dirty)
                if self._down_until:
                    log.info("rate-limit slots are counted in the database again")
                    self._down_until = 0.0
            except Exception as exc:  # noqa: BLE001 - the database is unreachable
                log.error("rate-limit slots could not be written (%s: %s); counting this process's own for "
                          "%.0f s (the other processes' are not seen meanwhile)", type(exc).__name__, exc,
                          self.RETRY_S)
                self._down_until = time.monotonic() + self.RETRY_S
                self._decide_here(asks, dirty)

    def _decide_here(self, asks: dict[str, list[_Ask]], dirty: set[str]) -> None:
        """While the database is unreachable, requests go on within this process's own count (as
        tokens verified before and usage journaled on disk do), and rows are rewritten once it is back."""
        for key, waiting in asks.items():
            for ask in waiting:
                if not ask.granted.done():
                    ok = self._held[key] < ask.limit
                    self._held[key] += ok
                    ask.granted.set_result(ok)
        self._dirty |= dirty | set(asks)

    async def _write(self, asks: dict[str, list[_Ask]], dirty: set[str]) -> None:
        expires = utcnow() + timedelta(seconds=self._lease)
        postgres = not self._db.is_sqlite
        for key, waiting in asks.items():
            async with self._db.engine.begin() as conn:
                if postgres:
                    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
                # my row first: on SQLite that write takes the writer lock before anything is read
                mine = self._held[key]  # releases meanwhile lower it later (a write of their own)
                await self._upsert(conn, key, mine, expires)
                others = (await conn.execute(
                    select(func.coalesce(func.sum(_T.c.n), 0))
                    .where(_T.c.key == key, _T.c.holder != self.holder, _T.c.expires_at > utcnow())
                )).scalar_one()
                granted, grants = [], 0
                for ask in waiting:
                    if ask.granted.done():  # the client left while waiting
                        continue
                    ok = others + mine + grants < ask.limit
                    grants += ok
                    granted.append((ask, ok))
                await self._upsert(conn, key, mine + grants, expires)
            self._held[key] += grants  # committed: now they are held
            for ask, ok in granted:
                if not ask.granted.done():
                    ask.granted.set_result(ok)
                elif ok:  # admitted after its caller left: give the slot back
                    self._held[key] -= 1
                    self._dirty.add(key)
        if dirty:
            async with self._db.engine.begin() as conn:
                for key in dirty:
                    await self._upsert(conn, key, self._held[key], expires)

    async def _upsert(self, conn, key: str, n: int, expires) -> None:
        updated = await conn.execute(update(_T).where(_T.c.key == key, _T.c.holder == self.holder)
                                     .values(n=n, expires_at=expires))
        if updated.rowcount == 0:
            await conn.execute(insert(_T).values(key=key, holder=self.holder, n=n, expires_at=expires))

    async def _renew_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._lease / 3)
            try:
                async with self._db.engine.begin() as conn:
                    await conn.execute(update(_T).where(_T.c.holder == self.holder)
                                       .values(expires_at=utcnow() + timedelta(seconds=self._lease)))
                    await conn.execute(delete(_T).where(
                        or_(_T.c.expires_at < utcnow(), and_(_T.c.holder == self.holder, _T.c.n == 0))))
            except Exception as exc:  # noqa: BLE001 - retried at the next renewal
                log.warning("renewing rate-limit leases failed (%s)", type(exc).__name__)


class TokensPerMinute:
    """Tokens consumed over the last minute, per key, in this process (a sliding window)."""

    WINDOW_S = 60.0

    def __init__(self) -> None:
        self._events: dict[str, deque[tuple[float, int]]] = {}
        self._sums: dict[str, int] = {}

    def used(self, key: str, now: float | None = None) -> int:
        events = self._events.get(key)
        if not events:
            return 0
        cutoff = (now or time.monotonic()) - self.WINDOW_S
        total = self._sums[key]
        while events and events[0][0] <= cutoff:
            total -= events.popleft()[1]
        self._sums[key] = total
        return total

    def retry_after(self, key: str) -> float:
        events = self._events.get(key)
        if not events:
            return 1.0
        return max(1.0, events[0][0] + self.WINDOW_S - time.monotonic())

    def add(self, key: str, tokens: int) -> None:
        if tokens <= 0:
            return
        self._events.setdefault(key, deque()).append((time.monotonic(), tokens))
        self._sums[key] = self._sums.get(key, 0) + tokens

    async def refresh(self, keys: list[str]) -> None:
        """Read what others consumed for ``keys`` (nothing to read in one process)."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class SharedTokensPerMinute(TokensPerMinute):
    """This process's minute (exact, as ``TokensPerMinute``) plus the other processes' on the
    database, written and read in 5-second buckets (see the module's notes)."""

    BUCKET_S = 5
    FLUSH_S = 1.0
    KEEP_BUCKETS = 14  # rows older than this (70 s) are deleted

    def __init__(self, db: Database, holder: str):
        super().__init__()
        self._db = db
        self.holder = holder
        self._pending: dict[tuple[str, int], int] = defaultdict(int)  # (key, bucket) -> tokens to write
        self._others: dict[str, tuple[float, int, float]] = {}  # key -> (read at, tokens, wall time the oldest leaves)
        self._reading: dict[str, asyncio.Future] = {}
        self._flusher: asyncio.Task | None = None

    def _bucket(self, now: float | None = None) -> int:
        return int((now if now is not None else time.time()) // self.BUCKET_S)

    def add(self, key: str, tokens: int) -> None:
        super().add(key, tokens)
        if tokens > 0:
            self._pending[(key, self._bucket())] += tokens

    def used(self, key: str, now: float | None = None) -> int:
        return super().used(key, now) + self._others.get(key, (0.0, 0, 0.0))[1]

    def retry_after(self, key: str) -> float:
        own = super().retry_after(key) if self._events.get(key) else 0.0
        _, others, leaves_at = self._others.get(key, (0.0, 0, 0.0))
        theirs = leaves_at - time.time() if others else 0.0
        return max(1.0, own, theirs)

    async def refresh(self, keys: list[str]) -> None:
        now = time.monotonic()
        stale = [key for key in keys if now - self._others.get(key, (-1e9, 0, 0.0))[0] >= self.FLUSH_S]
        if not stale:
            return
        # one read per key at a time: the requests that arrive meanwhile wait for it
        waiting = [self._reading[key] for key in stale if key in self._reading]
        todo = [key for key in stale if key not in self._reading]
        if todo:
            done = asyncio.get_running_loop().create_future()
            for key in todo:
                self._reading[key] = done
            try:
                await self._read(todo, now)
            finally:
                for key in todo:
                    self._reading.pop(key, None)
                done.set_result(None)
        if waiting:  # shielded: a waiter that leaves does not cancel the reading
            await asyncio.gather(*(asyncio.shield(reading) for reading in waiting))

    async def _read(self, keys: list[str], now: float) -> None:
        wall = time.time()
        first = self._bucket(wall - self.WINDOW_S)  # the oldest bucket that overlaps the minute
        try:
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(
                    select(_M.c.key, func.sum(_M.c.tokens), func.min(_M.c.bucket))
                    .where(_M.c.key.in_(keys), _M.c.holder != self.holder, _M.c.bucket >= first)
                    .group_by(_M.c.key))).all()
        except Exception as exc:  # noqa: BLE001 - the last reading stands until the next try
            log.warning("reading other processes' tokens per minute failed (%s); using the last reading",
                        type(exc).__name__)
            for key in keys:
                _, tokens, leaves = self._others.get(key, (0.0, 0, 0.0))
                self._others[key] = (now, tokens, leaves)
            return
        found = {key: (int(tokens), (oldest + 1) * self.BUCKET_S + self.WINDOW_S) for key, tokens, oldest in rows}
        for key in keys:
            tokens, leaves = found.get(key, (0, 0.0))
            self._others[key] = (now, tokens, leaves)
        if len(self._others) > 10_000:  # keys nobody asked about for a minute
            self._others = {k: v for k, v in self._others.items() if now - v[0] < self.WINDOW_S}

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="tokens-per-minute")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.flush()

    async def _flush_loop(self) -> None:
        turns = 0
        while True:
            await asyncio.sleep(self.FLUSH_S)
            await self.flush(prune=turns % 10 == 0)
            turns += 1

    async def flush(self, prune: bool = False) -> None:
        """Write this process's tokens since the last flush (kept for the next one if that fails)."""
        pending, self._pending = self._pending, defaultdict(int)
        try:
            async with self._db.engine.begin() as conn:
                for (key, bucket), tokens in pending.items():
                    updated = await conn.execute(
                        update(_M).where(_M.c.key == key, _M.c.holder == self.holder, _M.c.bucket == bucket)
                        .values(tokens=_M.c.tokens + tokens))
                    if updated.rowcount == 0:
                        await conn.execute(insert(_M).values(key=key, holder=self.holder, bucket=bucket,
                                                             tokens=tokens))
                if prune:
                    await conn.execute(delete(_M).where(_M.c.bucket < self._bucket() - self.KEEP_BUCKETS))
        except Exception as exc:  # noqa: BLE001 - written at the next flush
            log.warning("writing tokens per minute failed (%s); retried in %.0f s", type(exc).__name__, self.FLUSH_S)
            for item, tokens in pending.items():
                self._pending[item] += tokens


class Limits:
    """The rate limits of one request: a slot per key for as long as it runs, and the minute's tokens."""

    def __init__(self, slots: LocalSlots | SharedSlots, default_rate_limit: int, default_tpm: int | None,
                 tpm: TokensPerMinute | None = None):
        self.slots = slots
        self.tpm = tpm if tpm is not None else TokensPerMinute()
        self._default_rate = default_rate_limit
        self._default_tpm = default_tpm

    def applying(self, token) -> tuple[int, int | None]:
        """(concurrent requests per model, tokens per minute) a token (a TokenInfo, or None with
        authentication off) may use: its own limits where tighter than its account's."""
        if token is None:
            return self._default_rate, self._default_tpm
        tpm = [limit for _, limit in self.per_minute(token)]
        return min(limit for _, limit in self._concurrent(token)), min(tpm) if tpm else None

    def _concurrent(self, token) -> list[tuple[str, int]]:
        """(whose, limit): the account's (or the server's default), and the token's own if it has one."""
        limits = [(token.account_id, token.account_rate_limit or self._default_rate)]
        if token.token_rate_limit is not None:
            limits.append((token.token_id, token.token_rate_limit))
        return limits

    def concurrency(self, token, model: str) -> list[tuple[str, int]]:
        """(key, limit) of each concurrency limit on ``token`` (a TokenInfo) for ``model``."""
        return [(f"c:{whose}:{model}", limit) for whose, limit in self._concurrent(token)]

    def per_minute(self, token) -> list[tuple[str, int]]:
        wanted = []
        account = token.account_tpm_rate_limit or self._default_tpm
        if account is not None:
            wanted.append((f"m:{token.account_id}", account))
        if token.token_tpm_rate_limit is not None:
            wanted.append((f"m:{token.token_id}", token.token_tpm_rate_limit))
        return wanted

    async def admit(self, token, model: str) -> Hold | None:
        """Take the request's slots, or 429 ``Rate limited`` with ``Retry-After``."""
        if token is None:  # authentication is off: no accounts, no limits
            return None
        per_minute = self.per_minute(token)
        if per_minute:
            await self.tpm.refresh([key for key, _ in per_minute])
        for key, limit in per_minute:
            if self.tpm.used(key) >= limit:
                raise Overloaded(f"{RATE_LIMITED}: {limit} tokens per minute", retry_after=self.tpm.retry_after(key))
        return await self.slots.acquire(self.concurrency(token, model))

    async def start(self) -> None:
        await self.slots.start()
        await self.tpm.start()

    async def stop(self) -> None:
        await self.slots.stop()
        await self.tpm.stop()

    def done(self, token, hold: Hold | None, tokens: int) -> None:
        if hold is not None:
            self.slots.release(hold)
        if token is not None and tokens:
            for key, _ in self.per_minute(token):
                self.tpm.add(key, tokens)
