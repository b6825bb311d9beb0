from decimal import Decimal

import orjson
import pytest
from pydantic import TypeAdapter

from inferd.catalog.pricing import Pricing, Units, cost_nano_usd, nano_to_usd

adapter = TypeAdapter(Pricing)


def test_tokens_pricing_bills_input_cached_and_output_tokens():
    pricing = adapter.validate_python(
        {"type": "tokens", "cents_per_input_token": 2, "cents_per_output_token": 5, "cents_per_cached_input_token": 1}
    )
    assert pricing.cost_cents(Units(input_tokens=10, cached_input_tokens=4, output_tokens=3)) == 6 * 2 + 4 * 1 + 3 * 5


def test_cached_tokens_cost_the_input_rate_when_no_cached_rate_is_set():
    pricing = adapter.validate_python({"type": "tokens", "cents_per_input_token": 2})
    assert pricing.cost_cents(Units(input_tokens=10, cached_input_tokens=4)) == 20


@pytest.mark.parametrize(
    ("spec", "units", "cents"),
    [
        ({"type": "input_tokens", "cents_per_input_token": 0.5}, Units(input_tokens=8, output_tokens=100), "4.0"),
        ({"type": "time", "cents_per_sec": 3}, Units(seconds=1.5), "4.5"),
        ({"type": "input_length", "cents_per_input_sec": 2}, Units(input_seconds=6), "12"),
        ({"type": "image_units", "cents_per_image_unit": 7}, Units(images=2), "14"),
    ],
)
def test_each_pricing_type_bills_its_own_units(spec, units, cents):
    assert adapter.validate_python(spec).cost_cents(units) == Decimal(cents)


def test_costs_are_exact_integers_of_nano_dollars():
    # the catalog's $0.005 per million tokens: a float sum of 0.0000005 drifts, the Decimal does not
    pricing = adapter.validate_python({"type": "input_tokens", "cents_per_input_token": 0.0000005})
    assert pricing.cents_per_input_token == Decimal("0.0000005")
    assert cost_nano_usd(pricing, Units(input_tokens=1)) == 5
    assert sum(cost_nano_usd(pricing, Units(input_tokens=7)) for _ in range(1_000)) == 35_000
    # $0.01 per million input + $0.02 per million output: 123 in, 45 out = 1.23 + 0.9 micro-dollars
    chat = adapter.validate_python({"type": "tokens", "cents_per_input_token": 0.000001,
                                    "cents_per_output_token": 0.000002})
    assert cost_nano_usd(chat, Units(input_tokens=123, output_tokens=45)) == 1230 + 900
    # a fraction of a nano-dollar rounds half up, once per request
    tiny = adapter.validate_python({"type": "input_tokens", "cents_per_input_token": 0.00000005})
    assert cost_nano_usd(tiny, Units(input_tokens=1)) == 1 and cost_nano_usd(tiny, Units(input_tokens=3)) == 2
    assert cost_nano_usd(None, Units(input_tokens=1000)) == 0


def test_the_wire_figure_gives_the_stored_integer_back():
    for nano in (0, 1, 5, 2130, 999_999_999, 123_456_789_012):
        shown = orjson.loads(orjson.dumps(nano_to_usd(nano)))
        assert round(shown * 10**9) == nano


def test_rates_are_numbers_on_the_wire():
    pricing = adapter.validate_python({"type": "tokens", "cents_per_input_token": 0.000001})
    assert pricing.model_dump()["cents_per_input_token"] == 0.000001
    assert orjson.loads(orjson.dumps(pricing.model_dump()))["cents_per_input_token"] == 0.000001


def test_negative_and_infinite_rates_are_refused():
    for bad in (-1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            adapter.validate_python({"type": "input_tokens", "cents_per_input_token": bad})
