"""The meter: what a request is charged, under each outcome, at each pricing type; the gate
before it (a scoped token's models, spending limits)."""

import asyncio

import pytest

from inferd.accounts.limits import Limits, LocalSlots
from inferd.accounts.tokens import Scope, TokenInfo
from inferd.accounts.usage import UsageRecorder
from inferd.catalog import Catalog, Units
from inferd.catalog.spec import ModelSpec
from inferd.errors import Forbidden, InvalidRequest, Overloaded
from inferd.observability.metrics import Metrics
from inferd.serving.context import RequestContext
from inferd.serving.metering import Meter


class Rows(UsageRecorder):
    def __init__(self):
        self.rows = []

    def record(self, row):
        self.rows.append(row)


def ref(pricing):
    spec = ModelSpec(id="org/m", task="embeddings", backend="sentence-transformers", source="/nowhere",
                     pricing=pricing)
    return next(iter(Catalog([spec]).refs()))


def meter(limit: int = 200):
    rows = Rows()
    return Meter(rows, Metrics(), None, Limits(LocalSlots(), limit, None)), rows


async def test_time_pricing_bills_the_requests_runtime():
    m, rows = meter()
    async with m.track(RequestContext("r1"), ref({"type": "time", "cents_per_sec": 100})) as metered:
        await asyncio.sleep(0.05)
        charge = metered.charge(Units(input_tokens=3))
    (row,) = rows.rows
    assert row.seconds >= 0.05 and row.pricing_type == "time"
    assert row.cost_nano_usd == charge.cost_nano_usd == round(row.seconds * 10**9)  # $1 a second


async def test_a_refused_request_costs_nothing_and_a_failed_one_what_it_consumed():
    m, rows = meter()
    pricing = {"type": "input_tokens", "cents_per_input_token": 1}
    with pytest.raises(InvalidRequest):
        async with m.track(RequestContext("r1"), ref(pricing)):
            raise InvalidRequest("bad")
    with pytest.raises(RuntimeError):
        async with m.track(RequestContext("r2"), ref(pricing)) as metered:
            metered.consume(Units(input_tokens=7))
            raise RuntimeError("engine died")
    refused, failed = rows.rows
    assert (refused.status, refused.cost_nano_usd) == ("failed", 0)
    assert (failed.status, failed.input_tokens, failed.cost_nano_usd) == ("failed", 7, 70_000_000)


async def test_a_scoped_token_is_kept_to_its_models_and_slots_are_given_back():
    m, rows = meter(limit=1)
    token = TokenInfo(token_id="tok_1", name="t", account_id="acc_1",
                      scope=Scope(scope_id="sc_1", models=frozenset({"org/other"}), spending_limit_nano_usd=None))
    with pytest.raises(Forbidden):
        m.track(RequestContext("r1", token=token), ref(None))
    free = TokenInfo(token_id="tok_2", name="t", account_id="acc_1")
    async with m.track(RequestContext("r2", token=free), ref(None)) as metered:
        with pytest.raises(Overloaded, match="Rate limited"):
            async with m.track(RequestContext("r3", token=free), ref(None)):
                pass
        metered.charge(Units())
    async with m.track(RequestContext("r4", token=free), ref(None)) as metered:  # the slot came back
        metered.charge(Units())
    assert [r.request_id for r in rows.rows] == ["r2", "r4"]
