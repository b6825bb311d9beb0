"""Usage records, written off the hot path in batches; journaled on disk while the database is
unreachable, so a bill loses no row."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson

from inferd.accounts.db import Database
from inferd.accounts.models import UsageRecord
from inferd.catalog.pricing import cents_to_nano

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UsageRow:
    request_id: str
    token_id: str | None
    model: str
    version: str
    task: str
    status: str
    account_id: str | None = None
    scope_id: str | None = None
    pricing_type: str | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    images: float = 0.0
    seconds: float = 0.0
    input_seconds: float = 0.0
    input_characters: int = 0
    cost_nano_usd: int = 0
    runtime_ms: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    client_request_id: str | None = None

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in _ROW_FIELDS}


_ROW_FIELDS = tuple(f.name for f in fields(UsageRow))


class UsageJournal:
    """An append-only file of usage rows (JSON lines) that could not reach the database yet.

    Each append is flushed and fsync'd before it returns, so rows in the journal survive a crash.
    ``take()`` reads what is there (skipping a torn last line) for replay; ``clear()`` ends it.
    """

    def __init__(self, path: Path):
        self.path = path

    def __bool__(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def append(self, rows: list[UsageRow]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = b"".join(orjson.dumps(r.as_dict(), option=orjson.OPT_UTC_Z) + b"\n" for r in rows)
        with open(self.path, "ab") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())

    def take(self) -> list[UsageRow]:
        rows = []
        with open(self.path, "rb") as journal:
            for line in journal:
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError:  # a line torn by a crash mid-append
                    continue
                data["created_at"] = datetime.fromisoformat(data["created_at"])
                if "cost_cents" in data:  # journaled by a server from before migration 0003
                    cents = data.pop("cost_cents")
                    data["cost_nano_usd"] = cents_to_nano(Decimal(repr(cents)))
                rows.append(UsageRow(**data))
        return rows

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class UsageRecorder:
    """``record()`` appends to a buffer; a background task writes it in one INSERT.

    Nothing is lost on the way:
    - ``stop()`` lets a flush in progress finish, then writes what is left;
    - a write that fails (the database is down) goes to the journal on disk at once, so memory
      stays bounded (``flush_batch`` rows wake a flush early); while the database is unreachable
      the recorder retries with backoff (up to ``max_backoff_s``) and keeps journaling;
    - when the database answers again, the journal is replayed first, then cleared; rows are
      keyed by their request id and inserted with ON CONFLICT DO NOTHING, so a row replayed
      twice (a crash between insert and clear) is stored once;
    - a journal left by a crash is replayed at start. ``kill -9`` loses at most the rows
      recorded since the last flush (``flush_interval_s``).
    """

    def __init__(self, db: Database, flush_interval_s: float = 0.5, flush_batch: int = 512,
                 journal: Path | None = None, max_backoff_s: float = 30.0):
        self._db = db
        self._interval = flush_interval_s
        self._batch = flush_batch
        self._max_backoff = max_backoff_s
        self._journal = UsageJournal(journal) if journal is not None else None
        self._buffer: list[UsageRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._stopping = False
        self._failures = 0
        self._retry_at = 0.0

    def record(self, row: UsageRow) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self._batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def journaled(self) -> bool:
        return bool(self._journal)

    async def start(self) -> None:
        self._stopping = False
        if self._journal:
            log.warning("replaying usage records journaled while the database was unreachable (%s)",
                        self._journal.path)
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        """Finish the flush in progress, write what is left (or journal it), and stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._retry_at = 0.0
        await self.flush()

    async def flush(self) -> int:
        """Write the journal (if any) and the buffer; returns the rows written to the database."""
        async with self._lock:
            rows, self._buffer = self._buffer, []
            if not rows and not self._journal:
                return 0
            try:
                written = await asyncio.shield(self._write_all(rows))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is unreachable: keep every row
                self._failures += 1
                delay = min(self._max_backoff, self._interval * 2 ** min(self._failures, 16))
                self._retry_at = time.monotonic() + delay
                log.error("writing usage records failed (%s: %s); journaling them, retry in %.1f s",
                          type(exc).__name__, exc, delay)
                await self._spill(rows)
                return 0
            if self._failures:
                log.info("usage records reach the database again")
            self._failures, self._retry_at = 0, 0.0
            return written

    async def _write_all(self, rows: list[UsageRow]) -> int:
        written = 0
        if self._journal:
            journaled = await asyncio.to_thread(self._journal.take)
            written += await self._insert(journaled)
            self._journal.clear()
        return written + await self._insert(rows)

    async def _insert(self, rows: list[UsageRow]) -> int:
        if not rows:
            return 0
        statement = insert_ignoring_duplicates(self._db)
        async with self._db.sessions.begin() as session:
            for start in range(0, len(rows), 5000):
                await session.execute(statement, [r.as_dict() for r in rows[start:start + 5000]])
        return len(rows)

    async def _spill(self, rows: list[UsageRow]) -> None:
        if not rows:
            return
        if self._journal is None:  # nowhere else to keep them: back in the buffer
            self._buffer[:0] = rows
            return
        try:
            await asyncio.to_thread(self._journal.append, rows)
        except OSError:
            log.exception("journaling %d usage records failed; keeping them in memory", len(rows))
            self._buffer[:0] = rows

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return
            if time.monotonic() < self._retry_at:  # the database was down a moment ago: to disk only
                async with self._lock:
                    rows, self._buffer = self._buffer, []
                    await self._spill(rows)
                continue
            await self.flush()


def insert_ignoring_duplicates(db: Database):
    """INSERT that skips rows whose request id is already stored (replays are idempotent)."""
    if db.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    # on the table, not the ORM class: a plain executemany, without the ORM's bulk-persistence work on the loop
    return dialect_insert(UsageRecord.__table__).on_conflict_do_nothing(index_elements=["request_id"])
