"""The tool-call parser: content and Hermes-tagged calls, whole or fed in pieces of any size."""

from __future__ import annotations

import json

import pytest

from inferd.serving.tool_calls import CallArguments, CallStart, Text, ToolCallStream, parse

ONE = 'Let me check.<tool_call>\n{"name": "f", "arguments": {"a": "x}", "b": [1, {}], "c": "<tool_call>"}}\n</tool_call>'
TWO = ('<tool_call>\n{"name":"f","arguments":{"a":"x"}}\n</tool_call>\n'
       '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>')


def streamed(text: str, size: int) -> list:
    stream, events = ToolCallStream(), []
    for start in range(0, len(text), size):
        events += stream.feed(text[start:start + size])
    return events + stream.finish()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_a_streamed_call_names_itself_first_then_streams_its_arguments(size):
    events = streamed(ONE, size)
    assert "".join(e.text for e in events if isinstance(e, Text)) == "Let me check."
    starts = [e for e in events if isinstance(e, CallStart)]
    assert [(s.index, s.name) for s in starts] == [(0, "f")] and starts[0].id.startswith("call_")
    first = events.index(starts[0])  # text first, then the name, then the arguments
    assert all(isinstance(e, Text) for e in events[:first]) and all(isinstance(e, CallArguments) for e in events[first + 1:])
    arguments = "".join(e.text for e in events if isinstance(e, CallArguments))
    assert json.loads(arguments) == {"a": "x}", "b": [1, {}], "c": "<tool_call>"}
    if size < 10:
        assert sum(isinstance(e, CallArguments) for e in events) > 2  # fragments as they come


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_parallel_calls_get_their_own_index_and_no_content(size):
    events = streamed(TWO, size)
    assert not [e for e in events if isinstance(e, Text)]  # the line break between calls is not content
    assert [(e.index, e.name) for e in events if isinstance(e, CallStart)] == [(0, "f"), (1, "g")]
    for index, expected in [(0, {"a": "x"}), (1, {})]:
        assert json.loads("".join(e.text for e in events if isinstance(e, CallArguments) and e.index == index)) \
            == expected


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_an_answer_that_opens_with_a_brace_is_one_call_without_tags(size):
    events = streamed('{"name": "f", "arguments": {"a": {"b": "}"}}}', size)
    assert [e.name for e in events if isinstance(e, CallStart)] == ["f"] and not any(isinstance(e, Text) for e in events)
    assert json.loads("".join(e.text for e in events if isinstance(e, CallArguments))) == {"a": {"b": "}"}}
    assert parse(' {"name": "f"}')[1] == [] and parse(' {"name": "f"}')[0] == ' {"name": "f"}'  # text: not at the start


@pytest.mark.parametrize("size", [1, 4])
def test_text_that_only_looks_like_a_tag_is_given_back(size):
    text = "a <tool b <tool_cal"
    events = streamed(text, size)
    assert "".join(e.text for e in events) == text and all(isinstance(e, Text) for e in events)
    held = ToolCallStream().feed("x <tool_c")  # nothing that could begin a tag leaves before it is known
    assert held == [Text("x ")]


def test_parse_whole_answers():
    assert parse("just text ") == ("just text ", [])
    content, calls = parse(ONE)
    assert content == "Let me check." and calls[0].name == "f" and json.loads(calls[0].arguments)["b"] == [1, {}]
    content, calls = parse(TWO)
    assert content == "" and [c.name for c in calls] == ["f", "g"] and calls[0].id != calls[1].id
    content, calls = parse('<tool_call>\n{"name": "f", "arguments": {"a": "Par')  # cut off by max_tokens
    assert content == "" and calls[0].arguments == '{"a": "Par'
    assert parse('<tool_call>\n{"name": "f"')[1] == []  # nothing callable: no call
