"""Bills and request costs, from the usage rows (the only record of money).

``bill()`` gives DeepInfra's ``UsageOut``: calendar months (UTC) with one item per model and
pricing type, units, the average rate, and the cost in integer cents (DeepInfra's unit), each
with its exact ``cost_nano_usd`` beside it; a month's ``total_cost`` is its exact sum rounded
half up to the cent once, so it equals the sum of what the responses reported, to the cent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, or_, select

from inferd.accounts.db import Database
from inferd.accounts.models import UsageRecord
from inferd.catalog.pricing import NANO_PER_CENT, nano_to_cents
from inferd.errors import InvalidRequest

MAX_MONTHS = 120
MAX_REQUEST_IDS = 1000
# the prefixes responses put before the request id (chatcmpl-ID, cmpl-ID, msg_ID, infinity-ID)
_ID_PREFIXES = ("chatcmpl-", "cmpl-", "msg_", "infinity-")
_MONTH = re.compile(r"^(\d{4})\.(\d{2})$")
_CURRENT = re.compile(r"^current(?:-(\d{1,4}))?$")


def _shift(year: int, month: int, by: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + by
    return index // 12, index % 12 + 1


def parse_period(value: str, now: datetime | None = None, param: str = "from") -> tuple[int, int]:
    """DeepInfra's period forms -> (year, month): ``YYYY.MM``, ``current``, ``current-N``, or unix seconds."""
    now = now or datetime.now(UTC)
    value = value.strip()
    if match := _MONTH.match(value):
        year, month = int(match[1]), int(match[2])
        if 1 <= month <= 12 and 1970 <= year <= 9999:
            return year, month
    elif match := _CURRENT.match(value):
        return _shift(now.year, now.month, -int(match[1] or 0))
    elif value.isdigit() and len(value) <= 12:
        moment = datetime.fromtimestamp(int(value), UTC)
        return moment.year, moment.month
    raise InvalidRequest(f"`{param}`: expected YYYY.MM, current, current-N or unix seconds", param=param)


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    next_year, next_month = _shift(year, month, 1)
    return datetime(year, month, 1, tzinfo=UTC), datetime(next_year, next_month, 1, tzinfo=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _units(pricing_type: str | None, row) -> int:
    """The units an item is billed in: tokens, seconds (of runtime or of input audio), images or
    characters (of text to speak)."""
    if pricing_type == "tokens":
        return int(row.input_tokens or 0) + int(row.output_tokens or 0)
    if pricing_type == "time":
        return round(row.seconds or 0)
    if pricing_type == "input_length":
        return round(row.input_seconds or 0)
    if pricing_type == "image_units":
        return round(row.images or 0)
    if pricing_type == "input_characters":
        return int(row.input_characters or 0)
    return int(row.input_tokens or 0)


async def bill(db: Database, *, start: tuple[int, int], end: tuple[int, int] | None = None,
               account_id: str | None, token_id: str | None = None, initial_month: str | None = None) -> dict:
    """DeepInfra's ``UsageOut`` for the months ``start``..``end`` (inclusive; ``end`` defaults to
    ``start``) of one account (or every account: ``account_id=None``), optionally of one token."""
    end = end or start
    months = (end[0] * 12 + end[1]) - (start[0] * 12 + start[1]) + 1
    if months < 1:
        raise InvalidRequest("`to` is before `from`", param="to")
    if months > MAX_MONTHS:
        raise InvalidRequest(f"at most {MAX_MONTHS} months in one bill", param="to")
    out = []
    async with db.sessions() as session:
        for i in range(months):
            year, month = _shift(*start, i)
            fr, to = month_bounds(year, month)
            query = (
                select(UsageRecord.model, UsageRecord.task, UsageRecord.pricing_type,
                       func.count().label("requests"),
                       func.sum(UsageRecord.input_tokens).label("input_tokens"),
                       func.sum(UsageRecord.cached_input_tokens).label("cached_input_tokens"),
                       func.sum(UsageRecord.output_tokens).label("output_tokens"),
                       func.sum(UsageRecord.seconds).label("seconds"),
                       func.sum(UsageRecord.input_seconds).label("input_seconds"),
                       func.sum(UsageRecord.input_characters).label("input_characters"),
                       func.sum(UsageRecord.images).label("images"),
                       func.sum(UsageRecord.cost_nano_usd).label("cost_nano_usd"))
                .where(UsageRecord.created_at >= fr, UsageRecord.created_at < to)
                .group_by(UsageRecord.model, UsageRecord.task, UsageRecord.pricing_type)
                .order_by(UsageRecord.model, UsageRecord.pricing_type)
            )
            if account_id is not None:
                query = query.where(UsageRecord.account_id == account_id)
            if token_id is not None:
                query = query.where(UsageRecord.token_id == token_id)
            interval = {"fr": _ms(fr), "to": _ms(to) - 1}
            items, total = [], 0
            for row in (await session.execute(query)).all():
                nano = int(row.cost_nano_usd or 0)
                units = _units(row.pricing_type, row)
                total += nano
                items.append({
                    "model": {"provider": "inferd", "model_name": row.model, "task": row.task},
                    "units": units,
                    "rate": float(Decimal(nano) / NANO_PER_CENT / units) if units else 0.0,
                    "cost": nano_to_cents(nano),
                    "cost_nano_usd": nano,
                    "pricing_type": row.pricing_type or "free",
                    "interval": interval,
                    "requests": int(row.requests),
                    "input_tokens": int(row.input_tokens or 0),
                    "cached_input_tokens": int(row.cached_input_tokens or 0),
                    "output_tokens": int(row.output_tokens or 0),
                })
            out.append({"period": f"{year:04d}.{month:02d}", "interval": interval, "items": items,
                        "total_cost": nano_to_cents(total), "total_cost_nano_usd": total,
                        "invoice_id": "NOT_FINAL"})
    return {"months": out, "initial_month": initial_month or f"{start[0]:04d}.{start[1]:02d}"}


async def request_costs(db: Database, request_ids: list[str], account_id: str | None) -> list[dict]:
    """``[{requestId, costNanoUsd}]`` for the ids asked that this account's usage rows know: the
    server's request id (``X-Request-ID`` when the client sent none, ``request_id``, or a
    response ``id`` such as ``chatcmpl-...``) or the client's own ``X-Request-ID`` (the sum of
    every request that carried it). Ids of other accounts' requests are not found."""
    if len(request_ids) > MAX_REQUEST_IDS:
        raise InvalidRequest(f"at most {MAX_REQUEST_IDS} request ids at once", param="requestIds")
    wanted: dict[str, str] = {}  # stored request id -> the id asked
    for asked in request_ids:
        wanted.setdefault(asked, asked)
        for prefix in _ID_PREFIXES:
            if asked.startswith(prefix):
                wanted.setdefault(asked[len(prefix):], asked)
    if not wanted:
        return []
    query = select(UsageRecord.request_id, UsageRecord.client_request_id, UsageRecord.cost_nano_usd).where(
        or_(UsageRecord.request_id.in_(list(wanted)), UsageRecord.client_request_id.in_(request_ids)))
    if account_id is not None:
        query = query.where(UsageRecord.account_id == account_id)
    costs: dict[str, int] = {}
    async with db.sessions() as session:
        for request_id, client_id, nano in (await session.execute(query)).all():
            asked = wanted.get(request_id) if request_id in wanted else client_id
            costs[asked] = costs.get(asked, 0) + int(nano)
    return [{"requestId": asked, "costNanoUsd": costs[asked]} for asked in dict.fromkeys(request_ids)
            if asked in costs]


async def spent(db: Database, *, scope_id: str | None = None, account_id: str | None = None,
                month: tuple[int, int] | None = None) -> int:
    """What the stored rows of a scoped token, or of an account in a month, cost (nano-dollars)."""
    query = select(func.coalesce(func.sum(UsageRecord.cost_nano_usd), 0))
    if scope_id is not None:
        query = query.where(UsageRecord.scope_id == scope_id)
    if account_id is not None:
        query = query.where(UsageRecord.account_id == account_id)
    if month is not None:
        start, end = month_bounds(*month)
        query = query.where(UsageRecord.created_at >= start, UsageRecord.created_at < end)
    async with db.sessions() as session:
        return int(await session.scalar(query) or 0)
