"""DeepInfra's pricing types, a union keyed on ``type``; every rate is in cents, kept as a
``Decimal`` (the catalog's ``0.0000005`` is exactly that), and a request's cost is an integer
number of nano-dollars (1 USD = 10**9), rounded half up once per request. Rates are shown as
numbers on the wire, as DeepInfra shows them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

NANO_PER_CENT = Decimal(10_000_000)
NANO_PER_USD = 1_000_000_000

Cents = Annotated[Decimal, Field(ge=0, allow_inf_nan=False), PlainSerializer(float)]


@dataclass(frozen=True, slots=True)
class Units:
    """What one request consumed; each pricing type bills the units it knows."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    images: float = 0.0  # image units
    seconds: float = 0.0  # runtime seconds
    input_seconds: float = 0.0  # seconds of input audio
    input_characters: int = 0  # characters of input text (text to speech)


def _exact(value: float | int) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


class _Pricing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str

    def cost_cents(self, units: Units) -> Decimal:  # pragma: no cover - overridden
        raise NotImplementedError


class TokensPricing(_Pricing):
    type: Literal["tokens"] = "tokens"
    cents_per_input_token: Cents = Decimal(0)
    cents_per_output_token: Cents = Decimal(0)
    cents_per_cached_input_token: Cents | None = None

    @property
    def cached_rate(self) -> Decimal:
        return self.cents_per_input_token if self.cents_per_cached_input_token is None \
            else self.cents_per_cached_input_token

    def cost_cents(self, units: Units) -> Decimal:
        uncached = max(units.input_tokens - units.cached_input_tokens, 0)
        return (uncached * self.cents_per_input_token + units.cached_input_tokens * self.cached_rate
                + units.output_tokens * self.cents_per_output_token)


class InputTokensPricing(_Pricing):
    type: Literal["input_tokens"] = "input_tokens"
    cents_per_input_token: Cents = Decimal(0)

    def cost_cents(self, units: Units) -> Decimal:
        return units.input_tokens * self.cents_per_input_token


class TimePricing(_Pricing):
    type: Literal["time"] = "time"
    cents_per_sec: Cents = Decimal(0)

    def cost_cents(self, units: Units) -> Decimal:
        return _exact(units.seconds) * self.cents_per_sec


class InputLengthPricing(_Pricing):
    type: Literal["input_length"] = "input_length"
    cents_per_input_sec: Cents = Decimal(0)

    def cost_cents(self, units: Units) -> Decimal:
        return _exact(units.input_seconds) * self.cents_per_input_sec


class ImageUnitsPricing(_Pricing):
    type: Literal["image_units"] = "image_units"
    cents_per_image_unit: Cents = Decimal(0)
    default_width: int = 1024
    default_height: int = 1024
    default_iterations: int = 25

    def cost_cents(self, units: Units) -> Decimal:
        return _exact(units.images) * self.cents_per_image_unit


class InputCharactersPricing(_Pricing):
    type: Literal["input_characters"] = "input_characters"
    cents_per_input_character: Cents = Decimal(0)

    def cost_cents(self, units: Units) -> Decimal:
        return _exact(units.input_characters) * self.cents_per_input_character


Pricing = Annotated[
    TokensPricing | InputTokensPricing | TimePricing | InputLengthPricing | ImageUnitsPricing | InputCharactersPricing,
    Field(discriminator="type"),
]


def cents_to_nano(cents: Decimal) -> int:
    return int((cents * NANO_PER_CENT).to_integral_value(rounding=ROUND_HALF_UP))


def nano_to_cents(nano: int) -> int:
    """Whole cents (DeepInfra's unit on bills), rounded half up."""
    return int((Decimal(nano) / NANO_PER_CENT).to_integral_value(rounding=ROUND_HALF_UP))


def usd_to_nano(usd: Decimal | None) -> int | None:
    return None if usd is None else int(usd * NANO_PER_USD)


def cost_nano_usd(pricing: _Pricing | None, units: Units) -> int:
    """What ``units`` cost at ``pricing``, in integer nano-dollars (0 when the model is free)."""
    return 0 if pricing is None else cents_to_nano(pricing.cost_cents(units))


def nano_to_usd(nano: int | None) -> float | None:
    """For the wire (``estimated_cost``, ``inference_status.cost``): the stored integer, shown in
    dollars; ``round(usd * 10**9)`` gives the integer back."""
    return None if nano is None else nano / NANO_PER_USD
