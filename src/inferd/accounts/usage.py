"""Usage records, written off the hot path in batches and flushed on shutdown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

from sqlalchemy import insert

from inferd.accounts.db import Database
from inferd.accounts.models import UsageRecord

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UsageRow:
    request_id: str
    token_id: str | None
    model: str
    version: str
    task: str
    status: str
    input_tokens: int = 0
    output_tokens: int = 0
    images: float = 0.0
    seconds: float = 0.0
    cost_cents: float = 0.0
    runtime_ms: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in _ROW_FIELDS}


_ROW_FIELDS = tuple(f.name for f in fields(UsageRow))


class UsageRecorder:
    """``record()`` appends to a buffer; a background task writes the buffer in one INSERT.

    ``stop()`` writes whatever is left, so a clean shutdown loses nothing. A failed write
    keeps its rows for the next attempt (and logs why).
    """

    def __init__(self, db: Database, flush_interval_s: float = 0.5, flush_batch: int = 512):
        self._db = db
        self._interval = flush_interval_s
        self._batch = flush_batch
        self._buffer: list[UsageRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def record(self, row: UsageRow) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self._batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> int:
        async with self._lock:
            rows, self._buffer = self._buffer, []
            if not rows:
                return 0
            try:
                async with self._db.sessions.begin() as session:
                    await session.execute(insert(UsageRecord), [r.as_dict() for r in rows])
            except Exception:
                log.exception("writing %d usage records failed; keeping them for the next flush", len(rows))
                self._buffer[:0] = rows
                return 0
            return len(rows)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()


async def usage_summary(db: Database, since: datetime | None = None, token_id: str | None = None) -> list[dict]:
    """Requests, units and cost per model (and status), oldest first."""
    from sqlalchemy import func, select

    query = select(
        UsageRecord.model,
        UsageRecord.task,
        UsageRecord.status,
        func.count().label("requests"),
        func.sum(UsageRecord.input_tokens).label("input_tokens"),
        func.sum(UsageRecord.output_tokens).label("output_tokens"),
        func.sum(UsageRecord.cost_cents).label("cost_cents"),
        func.avg(UsageRecord.runtime_ms).label("avg_runtime_ms"),
    ).group_by(UsageRecord.model, UsageRecord.task, UsageRecord.status)
    if since is not None:
        query = query.where(UsageRecord.created_at >= since)
    if token_id is not None:
        query = query.where(UsageRecord.token_id == token_id)
    async with db.sessions() as session:
        return [dict(row._mapping) for row in (await session.execute(query)).all()]
