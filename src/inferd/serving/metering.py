"""Metering: every request that reached a model leaves a usage record, a cost and metrics; and
the gate before it, for what a token may spend and on which models."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from inferd.accounts.limits import Limits
from inferd.accounts.spending import SpendLedger, spend_limits
from inferd.accounts.usage import UsageRecorder, UsageRow
from inferd.catalog import ModelRef, Units, cost_nano_usd, nano_to_usd
from inferd.errors import (ClientDisconnected, EngineError, Forbidden, InferdError, ModelUnavailable,
                           SpendingLimitReached)
from inferd.observability.metrics import Metrics
from inferd.serving.context import RequestContext


@dataclass(slots=True)
class Charge:
    units: Units
    cost_nano_usd: int  # exactly what the usage row stores
    runtime_ms: int

    @property
    def cost_usd(self) -> float:
        """The stored integer in dollars, for the wire (``estimated_cost``, ``inference_status.cost``)."""
        return nano_to_usd(self.cost_nano_usd)


class Meter:
    def __init__(self, recorder: UsageRecorder, metrics: Metrics, spending: SpendLedger | None = None,
                 limits: Limits | None = None):
        self._recorder = recorder
        self._metrics = metrics
        self.spending = spending
        self.limits = limits

    def track(self, ctx: RequestContext, ref: ModelRef) -> Metered:
        """Admit the request to ``ref``'s model for its token, or refuse it before any work:
        403 for a model outside a scoped token's ``models``, 402 for a spent limit; entering
        the returned context takes its rate-limit slots (429 ``Rate limited``)."""
        limits: list[tuple[str, int, str]] = []
        token = ctx.token
        if token is not None:
            if token.scope is not None and not token.scope.allows_model(ref.spec.id):
                raise Forbidden(f"This scoped token may not use the model {ref.spec.id!r}")
            if self.spending is not None:
                limits = spend_limits(token)
                for key, limit, what in limits:
                    if self.spending.spent(key) >= limit:
                        raise SpendingLimitReached(f"Spending limit reached: {what} (${nano_to_usd(limit):.9g}) "
                                                   "is spent")
        return Metered(self, ctx, ref, limits)

    def _write(self, ctx: RequestContext, ref: ModelRef, status: str, units: Units, charge: Charge) -> None:
        spec = ref.spec
        self._recorder.record(
            UsageRow(
                request_id=ctx.request_id,
                client_request_id=ctx.client_request_id,
                token_id=ctx.token_id,
                account_id=ctx.account_id,
                scope_id=ctx.token.scope.scope_id if ctx.token and ctx.token.scope else None,
                model=spec.id,
                version=ref.version.name,
                task=spec.task.value,
                pricing_type=spec.pricing.type if spec.pricing else None,
                status=status,
                input_tokens=units.input_tokens,
                cached_input_tokens=units.cached_input_tokens,
                output_tokens=units.output_tokens,
                images=units.images,
                seconds=units.seconds,
                input_seconds=units.input_seconds,
                input_characters=units.input_characters,
                cost_nano_usd=charge.cost_nano_usd,
                runtime_ms=charge.runtime_ms,
            )
        )
        self._metrics.model_requests.labels(spec.id, spec.task.value, status).inc()
        if units.input_tokens:
            self._metrics.tokens.labels(spec.id, "input").inc(units.input_tokens)
        if units.output_tokens:
            self._metrics.tokens.labels(spec.id, "output").inc(units.output_tokens)


class Metered:
    """``async with meter.track(ctx, ref) as m: ...; m.charge(units)`` -> one usage record.

    Leaving with an error records a failed (or cancelled) request, charged for what it had
    consumed by then: the units the caller reported with ``consume()`` (a generation's prompt
    and the tokens it had produced), at the model's prices. ``consume()`` raises
    SpendingLimitReached once the token's spending, this request's included, reaches a limit:
    a stream ends there, charged for what it made.
    """

    def __init__(self, meter: Meter, ctx: RequestContext, ref: ModelRef, limits: list[tuple[str, int, str]]):
        self._meter = meter
        self._ctx = ctx
        self._ref = ref
        self._limits = limits
        self._hold = None
        self.result: Charge | None = None
        self.consumed = Units()

    async def __aenter__(self) -> Metered:
        if self._meter.limits is not None:
            self._hold = await self._meter.limits.admit(self._ctx.token, self._ref.spec.id)
        return self

    def consume(self, units: Units) -> None:
        """What the request has consumed so far (a stream calls this after each step)."""
        self.consumed = units
        if not self._limits:
            return
        ledger, nano = self._meter.spending, cost_nano_usd(self._ref.spec.pricing, units)
        for key, limit, what in self._limits:
            ledger.running(key, id(self), nano)
            if ledger.spent(key) >= limit:
                raise SpendingLimitReached(f"Spending limit reached: {what} (${nano_to_usd(limit):.9g}) is spent; "
                                           "the output stops here")

    def charge(self, units: Units) -> Charge:
        self.result = self._charge(units)
        return self.result

    def _charge(self, units: Units) -> Charge:
        """What ``units`` cost; the request's runtime is its ``seconds`` (``time`` pricing) unless set."""
        runtime_ms = self._ctx.elapsed_ms()
        if not units.seconds:
            units = replace(units, seconds=runtime_ms / 1000)
        return Charge(units, cost_nano_usd(self._ref.spec.pricing, units), runtime_ms)

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self._close(exc_type, exc)

    def _close(self, exc_type, exc) -> None:
        if exc_type is None and self.result is not None:
            self._settle(self.result)
            self._meter._write(self._ctx, self._ref, "succeeded", self.result.units, self.result)
            return
        cancelled = exc_type is not None and issubclass(exc_type, (asyncio.CancelledError, GeneratorExit, ClientDisconnected))
        # refused (a full queue, a bad value found by the engine): nothing was consumed
        refused = isinstance(exc, InferdError) and not isinstance(exc, (ClientDisconnected, EngineError,
                                                                          ModelUnavailable, SpendingLimitReached))
        partial = Charge(Units(), 0, self._ctx.elapsed_ms()) if refused else self._charge(self.consumed)
        units = partial.units
        self._settle(partial)
        self._meter._write(self._ctx, self._ref, "cancelled" if cancelled else "failed", units, partial)

    def _settle(self, charge: Charge) -> None:
        for key, _, _ in self._limits:
            self._meter.spending.settle(key, id(self), charge.cost_nano_usd)
        if self._meter.limits is not None:
            units = charge.units
            self._meter.limits.done(self._ctx.token, self._hold, units.input_tokens + units.output_tokens)


def inference_status(charge: Charge, input_tokens: int, generated_tokens: int = 0) -> dict:
    """DeepInfra's ``inference_status`` of a request that succeeded (native routes)."""
    return {
        "status": "succeeded",
        "runtime_ms": charge.runtime_ms,
        "cost": charge.cost_usd,
        "tokens_input": input_tokens,
        "tokens_generated": generated_tokens,
    }
