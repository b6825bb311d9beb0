"""Forced tool calls: the plan's schema and the streamed call's deltas."""

from __future__ import annotations

import json

import pytest

from inferd.errors import InvalidRequest
from inferd.serving.tools import CallStream, tool_calls_of, tool_plan

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("text", ['{"name":"f","arguments":{"a":"x}","b":[1,{}]}}',
                                  '{"name": "f", "arguments": {"a": "x}", "b": [1, {}]}}'])
@pytest.mark.parametrize("size", [1, 3, 7])
def test_a_streamed_call_names_itself_first_then_streams_its_arguments(text, size):
    stream, deltas = CallStream(), []
    for start in range(0, len(text), size):
        deltas += stream.feed(text[start:start + size])
    deltas += stream.finish()
    assert deltas[0]["function"] == {"name": "f", "arguments": ""} and deltas[0]["id"].startswith("call_")
    arguments = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(arguments) == {"a": "x}", "b": [1, {}]}
    assert len(deltas) > 2 or size == 7  # arguments arrive in several fragments


def test_a_call_cut_short_is_not_a_call():
    stream = CallStream()
    stream.feed('{"name":"f","argu')
    assert stream.finish() == [] and tool_calls_of(stream.text) is None


def test_plans():
    assert tool_plan([TOOL], "none") is None and tool_plan(None, "required") is None
    assert not tool_plan([TOOL], "required").named
    assert tool_plan([TOOL], {"type": "function", "function": {"name": "f"}}).finish_reason == "stop"
    schema = json.loads(tool_plan([TOOL], "required").constraint.source)
    assert list(schema["properties"]) == ["name", "arguments"]  # the name streams first
    for bad in ("auto", None, {"type": "function", "function": {"name": "g"}}, "sometimes"):
        with pytest.raises(InvalidRequest):
            tool_plan([TOOL], bad)
