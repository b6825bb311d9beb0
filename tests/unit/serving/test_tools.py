"""Tool plans: the grammar each tool_choice gets (checked against SmolLM2's tokenizer) and the
prompt a template without tools gets."""

from __future__ import annotations

import json

import pytest

from inferd.engine.grammar import compile_constraint
from inferd.errors import InvalidRequest
from inferd.serving.tools import prepare_messages, tool_plan

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>'
TIME_CALL = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from llguidance.hf import from_tokenizer
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(smollm2_dir)
    return hf, from_tokenizer(hf, n_vocab=len(hf), eos_token=hf.eos_token_id)


def accepts(tokenizer, plan, text: str) -> bool:
    from llguidance import LLMatcher

    hf, lltok = tokenizer
    matcher = LLMatcher(lltok, compile_constraint(plan.constraint), log_level=0)
    return matcher.consume_tokens(hf.encode(text, add_special_tokens=False)) and matcher.is_accepting()


@pytest.mark.parametrize("choice, texts, ok", [
    ("auto", ["", "Just text.", "a < b", "Sure." + CALL, CALL, CALL + "\n" + TIME_CALL, "a {b}",
              CALL.split("\n")[1]], True),
    ("auto", [CALL + " and more text", "<tool_call>\nnot json\n</tool_call>", CALL.replace('"Paris"', '1'),
              CALL.replace("get_weather", "get_news"), CALL.replace('"location": "Paris"', '"city": "Paris"'),
              '{"answer": 4}', "{ not json"], False),
    ("required", [CALL, TIME_CALL, CALL + "\n" + TIME_CALL], True),
    ("required", ["", "Just text.", "Sure." + CALL], False),
    ({"type": "function", "function": {"name": "get_time"}}, [TIME_CALL], True),
    ({"type": "function", "function": {"name": "get_time"}}, [CALL, TIME_CALL + "\n" + TIME_CALL], False),
])
def test_each_choice_allows_what_it_should(tokenizer, choice, texts, ok):
    plan = tool_plan([WEATHER, TIME], choice)
    for text in texts:
        assert accepts(tokenizer, plan, text) is ok, text


def test_one_call_when_parallel_calls_are_off(tokenizer):
    plan = tool_plan([WEATHER, TIME], "auto", parallel=False)
    assert accepts(tokenizer, plan, CALL) and not accepts(tokenizer, plan, CALL + "\n" + TIME_CALL)


def test_plans_and_bad_choices():
    assert tool_plan([WEATHER], "none") is None and tool_plan(None, "required") is None
    assert tool_plan([WEATHER], None).choice == "auto" and tool_plan([WEATHER], None).finish_reason == "tool_calls"
    assert tool_plan([WEATHER], {"type": "function", "function": {"name": "get_weather"}}).finish_reason == "stop"
    for bad in ({"type": "function", "function": {"name": "g"}}, "sometimes"):
        with pytest.raises(InvalidRequest) as info:
            tool_plan([WEATHER], bad)
        assert info.value.param == "tool_choice"
    for tools in ([{"type": "function"}], [WEATHER, WEATHER], [{"type": "function", "function": {"name": "f", "parameters": 3}}]):
        with pytest.raises(InvalidRequest):
            tool_plan(tools, "auto")
    bad_schema = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "string", "pattern": "(unclosed"}}}}}
    with pytest.raises(InvalidRequest) as info:
        compile_constraint(tool_plan([bad_schema], "auto").constraint)
    assert info.value.param == "tools"


def test_a_template_without_tools_gets_the_tool_prompt_and_hermes_history():
    plan = tool_plan([WEATHER], "auto")
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
            {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": {"location": "Rome"}}}]},
        {"role": "tool", "tool_call_id": "a", "content": "18C"},
        {"role": "tool", "tool_call_id": "b", "content": "21C"},
    ]
    messages, kwargs = prepare_messages(history, plan, knows_tools=False)
    assert kwargs == {} and [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"].startswith("Be brief.") and json.dumps(WEATHER) in messages[0]["content"]
    assert messages[2]["content"] == CALL + "\n" + CALL.replace("Paris", "Rome")
    assert messages[3]["content"] == "<tool_response>\n18C\n</tool_response>\n<tool_response>\n21C\n</tool_response>"
    assert all(set(m) == {"role", "content"} for m in messages)

    messages, kwargs = prepare_messages(history, plan, knows_tools=True)
    assert kwargs == {"tools": [WEATHER]} and messages[3] == history[3]
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == {"location": "Paris"}  # templates want objects
