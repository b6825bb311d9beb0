import pytest
from pydantic import TypeAdapter

from inferd.catalog.pricing import Pricing, Units, cost_cents

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
        ({"type": "input_tokens", "cents_per_input_token": 0.5}, Units(input_tokens=8, output_tokens=100), 4.0),
        ({"type": "time", "cents_per_sec": 3}, Units(seconds=1.5), 4.5),
        ({"type": "input_length", "cents_per_input_sec": 2}, Units(input_seconds=6), 12.0),
        ({"type": "image_units", "cents_per_image_unit": 7}, Units(images=2), 14.0),
    ],
)
def test_each_pricing_type_bills_its_own_units(spec, units, cents):
    assert adapter.validate_python(spec).cost_cents(units) == pytest.approx(cents)


def test_no_pricing_is_free():
    assert cost_cents(None, Units(input_tokens=1000)) == 0.0
