"""Tools: what a request's ``tools`` and ``tool_choice`` do to the prompt and to decoding.

Every call is written in the Hermes shape that ``serving/tool_calls.py`` parses, and a lark
grammar (llguidance) holds the model to it:

- ``auto`` (the default when tools are given): free text, or text and then one or more calls
  ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``; once the model opens a
  call, the JSON must name one of the tools and its arguments follow that tool's parameters
  schema. Text cannot contain a call that is not one. An answer that begins with ``{`` is one
  call without tags (some models, Qwen2.5-Coder among them, call that way).
- ``required``: one or more calls, nothing else; a named function: one call to it.
- ``none``: the tools are left out of the prompt and the answer is text.

``parallel_tool_calls: false`` allows one call. The prompt: a chat template that knows tools
(its source uses ``tools``) gets them as the template argument, the way the model was trained;
a template that does not (SmolLM2's) gets inferd's tool prompt in the system message, and the
history's calls and tool results are written in the same Hermes tags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inferd.engine.grammar import Constraint
from inferd.errors import InvalidRequest
from inferd.serving.tool_calls import CLOSE, OPEN

# arguments written as Hermes-trained models write them: {"name": "f", "arguments": {"a": 1}}
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True, slots=True)
class ToolPlan:
    tools: list[dict[str, Any]]  # OpenAI's shape: {"type": "function", "function": {...}}
    constraint: Constraint
    choice: str  # "auto" | "required" | "named"

    @property
    def finish_reason(self) -> str:
        """When the answer has calls: OpenAI answers a named choice with "stop"."""
        return "stop" if self.choice == "named" else "tool_calls"


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
    names = [f["name"] for f in out]
    if len(set(names)) != len(names):
        raise InvalidRequest("two tools have the same name", param="tools")
    return out


def _call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    def one(function):
        return {"type": "object", "properties": {"name": {"const": function["name"]},
                                                 "arguments": function["parameters"]},
                "required": ["name", "arguments"], "additionalProperties": False}

    schema = one(functions[0]) if len(functions) == 1 else {"anyOf": [one(f) for f in functions]}
    return {**schema, "x-guidance": _JSON_STYLE}


def _grammar(functions: list[dict[str, Any]], choice: str, parallel: bool) -> str:
    body = json.dumps(_call_schema(functions))
    call = f'"\\n" body "\\n{CLOSE}"'
    lines = ["%llguidance {}"]
    if choice == "auto":
        # text (never one holding the opening tag), text then tagged calls, or one bare call: an
        # answer that opens with "{" (Qwen2.5-Coder calls without the tags its template asks for)
        lines += ["start: TEXT | TEXT_OPEN calls | body",
                  f"TEXT: /([^{{](.|\\n)*)?/ & ~/(.|\\n)*{OPEN}(.|\\n)*/",
                  f"TEXT_OPEN: /([^{{](.|\\n)*)?{OPEN}/ & ~/(.|\\n)*{OPEN}(.|\\n)*{OPEN}/"]
    else:
        lines.append(f'start: "{OPEN}" calls')
    lines.append(f'calls: {call} more*' if parallel and choice != "named" else f"calls: {call}")
    lines += [f'more: "\\n{OPEN}" {call}', f"body: %json {body}"]
    return "\n".join(lines) + "\n"


def tool_plan(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None,
              parallel: bool | None = None) -> ToolPlan | None:
    """How a request's tools shape its answer; None when they do not (no tools, or ``none``)."""
    if not tools or tool_choice == "none":
        return None
    functions = _functions(tools)
    if tool_choice in (None, "auto", "required"):
        chosen, choice = functions, tool_choice or "auto"
    elif isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        name = tool_choice["function"].get("name")
        chosen, choice = [f for f in functions if f["name"] == name], "named"
        if not chosen:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    else:
        raise InvalidRequest("tool_choice must be \"none\", \"auto\", \"required\" or "
                             "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")
    grammar = _grammar(chosen, choice, parallel is not False)
    return ToolPlan(tools, Constraint.lark(grammar, param="tools"), choice)


# --- the prompt

_TOOL_PROMPT = """You can call functions to help with the user's request. Their signatures, one JSON object a line:
<tools>
{tools}
</tools>

To call a function, write a JSON object with its name and its arguments between tags, one call per block:
""" + OPEN + """
{{"name": "function_name", "arguments": {{"argument": "value"}}}}
""" + CLOSE + """
The results come back in <tool_response></tool_response> tags. Answer in plain text when no function is needed."""


def _arguments(value: Any) -> Any:
    """Templates write a call's arguments with ``tojson``: they want the object, not its text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _object_arguments(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {**call, "function": {**function, "arguments": _arguments(function.get("arguments"))}}


def _hermes_call(call: dict[str, Any]) -> str:
    function = _object_arguments(call)["function"]
    body = json.dumps({"name": function.get("name"), "arguments": function["arguments"]})
    return f"{OPEN}\n{body}\n{CLOSE}"


def prepare_messages(messages: list[dict[str, Any]], plan: ToolPlan | None,
                     knows_tools: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and template arguments that show the model its tools and its history of
    calls and results."""
    if knows_tools:
        out = [{**m, "tool_calls": [_object_arguments(c) for c in m["tool_calls"]]} if m.get("tool_calls") else m
               for m in messages]
        return out, ({"tools": plan.tools} if plan is not None else {})
    out = []
    results = False  # the last message holds tool results: the results of one turn's calls go together
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if results:
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + block}
            else:
                out.append({"role": "user", "content": block})
        elif role == "assistant" and message.get("tool_calls"):
            text = "\n".join([content] * bool(content) + [_hermes_call(c) for c in message["tool_calls"]])
            out.append({"role": "assistant", "content": text})
        else:
            out.append({k: v for k, v in message.items() if k not in ("tool_calls", "tool_call_id")})
        results = role == "tool"
    if plan is not None:
        prompt = _TOOL_PROMPT.format(tools="\n".join(json.dumps(t) for t in plan.tools))
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out, {}
