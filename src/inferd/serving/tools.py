"""Tool calling on the OpenAI chat route: ``tools`` with ``tool_choice``.

``required`` and a named function force a call: the answer is constrained to the JSON object
``{"name": <one of the tools>, "arguments": <that tool's parameters schema>}`` (the grammar
puts ``name`` first, so a stream can name the call before its arguments), and the serving
layer turns it into OpenAI's ``tool_calls``. ``none`` answers in text without the tools.
``auto`` (the model choosing between text and a call in its own format) is not served yet.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from inferd.engine.grammar import Constraint
from inferd.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class ToolPlan:
    constraint: Constraint
    named: bool  # a named tool_choice: OpenAI answers finish_reason "stop", else "tool_calls"

    @property
    def finish_reason(self) -> str:
        return "stop" if self.named else "tool_calls"


def _functions(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for position, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type", "function") != "function" or not isinstance(function, dict) or \
                not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest(f"tools[{position}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                                 param="tools")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidRequest(f"tools[{position}].function.parameters must be a JSON schema object", param="tools")
        out.append({"name": function["name"], "parameters": parameters})
    return out


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": function["parameters"]},
            "required": ["name", "arguments"], "additionalProperties": False}


def tool_plan(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None) -> ToolPlan | None:
    """How a request's tools shape its answer; None when they do not (no tools, or ``none``)."""
    if not tools or tool_choice == "none":
        return None
    functions = _functions(tools)
    if tool_choice in (None, "auto"):
        raise InvalidRequest("tool_choice \"auto\" is not served yet; use \"required\" or a named function",
                             param="tool_choice")
    if tool_choice == "required":
        chosen, named = functions, False
    elif isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        name = tool_choice["function"].get("name")
        chosen, named = [f for f in functions if f["name"] == name], True
        if not chosen:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    else:
        raise InvalidRequest("tool_choice must be \"none\", \"auto\", \"required\" or "
                             "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")
    schema = _call_schema(chosen[0]) if len(chosen) == 1 else {"anyOf": [_call_schema(f) for f in chosen]}
    return ToolPlan(Constraint.json_schema(schema), named)


def tool_calls_of(text: str) -> list[dict[str, Any]] | None:
    """OpenAI's ``tool_calls`` from a forced call's text; None if it is not a whole call."""
    try:
        call = json.loads(text)
    except ValueError:
        return None
    if not isinstance(call, dict) or "name" not in call or "arguments" not in call:
        return None
    return [{"id": call_id(), "type": "function",
             "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]


_HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class CallStream:
    """A forced call's text as it streams, turned into OpenAI's ``tool_calls`` deltas: the id and
    name as soon as the name is complete, then the arguments as they come. The grammar writes
    ``{"name": "...", "arguments": ...}``, so the arguments are everything after the head but the
    wrapper's closing brace (the last character is held back until the end)."""

    def __init__(self):
        self.text = ""
        self.start: int | None = None  # where the arguments begin, once the name is known
        self.sent = 0  # characters of the arguments sent so far

    def feed(self, piece: str) -> list[dict[str, Any]]:
        self.text += piece
        out: list[dict[str, Any]] = []
        if self.start is None:
            head = _HEAD.match(self.text)
            if head is None:
                return out
            self.start = head.end()
            out.append({"index": 0, "id": call_id(), "type": "function",
                        "function": {"name": json.loads(f'"{head.group(1)}"'), "arguments": ""}})
        return out + self._arguments(self.text[self.start:].rstrip()[:-1])

    def finish(self) -> list[dict[str, Any]]:
        if self.start is None:
            return []
        rest = self.text[self.start:].rstrip()
        return self._arguments(rest[:-1].rstrip() if rest.endswith("}") and tool_calls_of(self.text) else rest)

    def _arguments(self, available: str) -> list[dict[str, Any]]:
        new = available[self.sent:]
        self.sent += len(new)
        return [{"index": 0, "function": {"arguments": new}}] if new else []
