"""Structured output on the transformers runtime, with a tiny random-weight model that knows
nothing of JSON: every answer must still parse and validate, also on a tight token budget."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest

from inferd.engine.generation import GenerationRequest, SamplingParams
from inferd.engine.grammar import Constraint, compile_constraint
from inferd.errors import InvalidRequest
from tests.unit.engine.test_lm_scheduler import joined, make_engine

PROMPT = [1, 2, 3, 4]
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 12},
        "kind": {"enum": ["cat", "dog", "bird"]},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "owner": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    "required": ["name", "kind", "owner"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
async def engine(tiny_lm_dir):
    engine, _ = make_engine(tiny_lm_dir, max_batch_size=16, queue_size=1024)
    await engine.start()
    yield engine
    await engine.stop()


async def many(engine, constraint, count, max_tokens, **params):
    await engine.prepare(constraint)

    async def one(i):
        request = GenerationRequest(f"s{i}", PROMPT, SamplingParams(max_tokens=max_tokens, seed=i, temperature=1.0,
                                                                     constraint=constraint, **params))
        return joined([d async for d in engine.generate(request)])

    return await asyncio.gather(*[one(i) for i in range(count)])


async def test_json_object_always_parses(engine):
    for text, tokens, finish in await many(engine, Constraint.json_object(), 120, 48):
        assert finish == "stop", (text, finish)
        assert isinstance(json.loads(text), dict), text
        assert len(tokens) <= 48


async def test_nested_schema_validates_even_on_a_tight_budget(engine):
    constraint = Constraint.json_schema(SCHEMA)
    await engine.prepare(constraint)
    shortest = len(engine.grammars().closing_plan(engine.grammars().matcher(constraint), 200))
    for budget in (shortest + 1, 40, 64):  # just above the minimal answer's length, and roomier
        results = await many(engine, constraint, 60, budget)
        for text, tokens, finish in results:
            assert finish == "stop", (budget, text)
            jsonschema.validate(json.loads(text), SCHEMA)
            assert len(tokens) <= budget


async def test_regex(engine):
    pattern = r"[A-Z][a-z]{2,6}-\d{3}"
    for text, _, finish in await many(engine, Constraint.regex(pattern), 80, 16):
        assert finish == "stop" and re.fullmatch(pattern, text), text


async def test_constrained_and_free_rows_share_a_batch(engine):
    free = [GenerationRequest(f"f{i}", PROMPT, SamplingParams(max_tokens=20, seed=i, temperature=1.0, ignore_eos=True))
            for i in range(6)]
    constraint = Constraint.json_object()
    await engine.prepare(constraint)
    bound = [GenerationRequest(f"b{i}", PROMPT, SamplingParams(max_tokens=30, seed=i, constraint=constraint))
             for i in range(6)]

    async def run(request):
        return joined([d async for d in engine.generate(request)])

    results = await asyncio.gather(*[run(r) for r in free + bound])
    assert all(len(tokens) == 20 for _, tokens, _ in results[:6])
    assert all(isinstance(json.loads(text), dict) for text, _, _ in results[6:])


def test_a_schema_the_library_rejects_is_a_400_naming_the_problem():
    with pytest.raises(InvalidRequest, match="json_schema") as caught:
        compile_constraint(Constraint.json_schema({"type": "object", "properties": {"a": {"type": "frobnicate"}}}))
    assert caught.value.param == "response_format"
    with pytest.raises(InvalidRequest, match="regex"):
        compile_constraint(Constraint.regex("(unclosed"))


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string", "maxLength": 30},
                                         "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["location", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 2}},
        "required": ["numbers"]}}},
]


def check_calls(text: str, finish: str, minimum: int = 1) -> int:
    """The answer's calls parse and validate against their tool's schema; returns how many."""
    from inferd.serving.tool_calls import OPEN, parse

    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    content, calls = parse(text)
    assert finish == "stop" and OPEN not in content, (text, finish)
    assert len(calls) >= minimum, text
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), schemas[call.name])
    return len(calls)


async def test_forced_and_named_tool_calls_always_validate(engine):
    from inferd.serving.tools import tool_plan

    required = tool_plan(TOOLS, "required").constraint
    await engine.prepare(required)
    shortest = len(engine.grammars().closing_plan(engine.grammars().matcher(required), 200))
    for budget in (shortest + 1, 48, 80):
        for text, tokens, finish in await many(engine, required, 60, budget):
            check_calls(text, finish)
            assert len(tokens) <= budget
    named = tool_plan(TOOLS, {"type": "function", "function": {"name": "add"}}).constraint
    for text, _, finish in await many(engine, named, 40, 48):
        assert check_calls(text, finish) == 1 and '"name": "add"' in text


async def test_auto_answers_are_text_or_valid_calls(engine):
    from inferd.serving.tool_calls import OPEN, parse
    from inferd.serving.tools import tool_plan

    auto = tool_plan(TOOLS, "auto").constraint
    for text, tokens, finish in await many(engine, auto, 60, 24):
        content, calls = parse(text)
        assert not calls and OPEN not in content and content == text  # a random model writes no tags
        assert finish in ("stop", "length")
