"""Metering: every request that reached a model leaves a usage record, a cost and metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from inferd.accounts.usage import UsageRecorder, UsageRow
from inferd.catalog import ModelRef, Units, cost_nano_usd, nano_to_usd
from inferd.errors import ClientDisconnected, EngineError, InferdError, ModelUnavailable
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
    def __init__(self, recorder: UsageRecorder, metrics: Metrics):
        self._recorder = recorder
        self._metrics = metrics

    def track(self, ctx: RequestContext, ref: ModelRef) -> Metered:
        return Metered(self, ctx, ref)

    def _write(self, ctx: RequestContext, ref: ModelRef, status: str, units: Units, charge: Charge) -> None:
        spec = ref.spec
        self._recorder.record(
            UsageRow(
                request_id=ctx.request_id,
                client_request_id=ctx.client_request_id,
                token_id=ctx.token_id,
                account_id=ctx.account_id,
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
    """``with meter.track(ctx, ref) as m: ...; m.charge(units)`` -> one usage record.

    Leaving with an error records a failed (or cancelled) request, charged for what it had
    consumed by then: the units the caller kept in ``consumed`` (a generation's prompt and the
    tokens it had produced), at the model's prices.
    """

    def __init__(self, meter: Meter, ctx: RequestContext, ref: ModelRef):
        self._meter = meter
        self._ctx = ctx
        self._ref = ref
        self.result: Charge | None = None
        self.consumed = Units()

    def __enter__(self) -> Metered:
        return self

    def charge(self, units: Units) -> Charge:
        self.result = Charge(units, cost_nano_usd(self._ref.spec.pricing, units), self._ctx.elapsed_ms())
        return self.result

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.result is not None:
            self._meter._write(self._ctx, self._ref, "succeeded", self.result.units, self.result)
            return
        cancelled = exc_type is not None and issubclass(exc_type, (asyncio.CancelledError, GeneratorExit, ClientDisconnected))
        # refused (a full queue, a bad value found by the engine): nothing was consumed
        refused = isinstance(exc, InferdError) and not isinstance(exc, (ClientDisconnected, EngineError,
                                                                          ModelUnavailable))
        units = Units() if refused else self.consumed
        partial = Charge(units, cost_nano_usd(self._ref.spec.pricing, units), self._ctx.elapsed_ms())
        self._meter._write(self._ctx, self._ref, "cancelled" if cancelled else "failed", units, partial)


def inference_status(charge: Charge, input_tokens: int, generated_tokens: int = 0) -> dict:
    """DeepInfra's ``inference_status`` of a request that succeeded (native routes)."""
    return {
        "status": "succeeded",
        "runtime_ms": charge.runtime_ms,
        "cost": charge.cost_usd,
        "tokens_input": input_tokens,
        "tokens_generated": generated_tokens,
    }
