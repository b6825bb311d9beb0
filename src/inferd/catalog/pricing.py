"""DeepInfra's pricing types, a union keyed on ``type``; every amount is in cents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True, slots=True)
class Units:
    """What one request consumed; each pricing type bills the units it knows."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    images: float = 0.0  # image units
    seconds: float = 0.0  # runtime seconds
    input_seconds: float = 0.0  # seconds of input audio


class _Pricing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def cost_cents(self, units: Units) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


class TokensPricing(_Pricing):
    type: Literal["tokens"] = "tokens"
    cents_per_input_token: float = 0.0
    cents_per_output_token: float = 0.0
    cents_per_cached_input_token: float | None = None

    def cost_cents(self, units: Units) -> float:
        cached_rate = self.cents_per_cached_input_token
        if cached_rate is None:
            cached_rate = self.cents_per_input_token
        uncached = max(units.input_tokens - units.cached_input_tokens, 0)
        return (
            uncached * self.cents_per_input_token
            + units.cached_input_tokens * cached_rate
            + units.output_tokens * self.cents_per_output_token
        )


class InputTokensPricing(_Pricing):
    type: Literal["input_tokens"] = "input_tokens"
    cents_per_input_token: float = 0.0

    def cost_cents(self, units: Units) -> float:
        return units.input_tokens * self.cents_per_input_token


class TimePricing(_Pricing):
    type: Literal["time"] = "time"
    cents_per_sec: float = 0.0

    def cost_cents(self, units: Units) -> float:
        return units.seconds * self.cents_per_sec


class InputLengthPricing(_Pricing):
    type: Literal["input_length"] = "input_length"
    cents_per_input_sec: float = 0.0

    def cost_cents(self, units: Units) -> float:
        return units.input_seconds * self.cents_per_input_sec


class ImageUnitsPricing(_Pricing):
    type: Literal["image_units"] = "image_units"
    cents_per_image_unit: float = 0.0
    default_width: int = 1024
    default_height: int = 1024
    default_iterations: int = 25

    def cost_cents(self, units: Units) -> float:
        return units.images * self.cents_per_image_unit


Pricing = Annotated[
    TokensPricing | InputTokensPricing | TimePricing | InputLengthPricing | ImageUnitsPricing,
    Field(discriminator="type"),
]


def cost_cents(pricing: _Pricing | None, units: Units) -> float:
    return 0.0 if pricing is None else pricing.cost_cents(units)
