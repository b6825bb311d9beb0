"""Anthropic's Messages API on the same engines: a request becomes chat messages and
SamplingParams; the answer comes back as a message with content blocks, or as Anthropic's
stream of events (message_start, content_block_start/delta/stop, message_delta, message_stop).

Tool use rides on the chat route's machinery: ``tools`` ({name, description, input_schema})
and ``tool_choice`` ({"type": "auto" | "any" | "tool" | "none"}) become a ``ToolPlan``;
``tool_use`` blocks in the history become assistant tool calls and ``tool_result`` blocks tool
messages, rendered by the chat template; the answer's calls, read by the same tool-call
parser, come back as ``tool_use`` blocks (streamed as ``input_json_delta`` fragments) with
``stop_reason: "tool_use"``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from inferd.errors import InvalidRequest, UnsupportedInput
from inferd.protocol.anthropic import CountTokensRequest, MessagesRequest
from inferd.serving.context import RequestContext
from inferd.serving.generation import GenerationService, Run
from inferd.serving.tool_calls import CallStart, Text, ToolCallStream
from inferd.serving.tool_calls import parse as parse_tool_calls
from inferd.serving.prompt import sampling_params
from inferd.serving.tools import ToolPlan, tool_plan

_STOP_REASONS = {"length": "max_tokens"}
_ID_PREFIX = "toolu_"


def _text(content: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for block in content:
        kind = block.get("type")
        if kind != "text":
            raise UnsupportedInput(f"{where}: content blocks of type {kind!r} are not supported here (text only)")
        texts.append(str(block.get("text", "")))
    return "\n".join(texts)


def _message(role: str, content: str | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages: tool results become tool messages (before the
    user's text), tool_use blocks the assistant's tool calls."""
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    texts: list[str] = []
    results: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for position, block in enumerate(content):
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use" and role == "assistant":
            calls.append({"id": str(block.get("id", "")), "type": "function", "function": {
                "name": str(block.get("name", "")), "arguments": json.dumps(block.get("input") or {})}})
        elif kind == "tool_result" and role == "user":
            text = _text(block.get("content") or "", f"{where}.content[{position}].content")
            results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")),
                            "content": f"Error: {text}" if block.get("is_error") else text})
        else:
            raise UnsupportedInput(f"{where}: content blocks of type {kind!r} are not supported here "
                                   "(text, and tool_use / tool_result)")
    out = results
    if texts or calls or not results:
        out = out + [{"role": role, "content": "\n".join(texts), **({"tool_calls": calls} if calls else {})}]
    return out


def _tools(body: CountTokensRequest) -> ToolPlan | None:
    """Anthropic's tools and tool_choice as a tool plan."""
    if not body.tools:
        return None
    tools = []
    for position, tool in enumerate(body.tools):
        if not isinstance(tool.get("name"), str) or tool.get("type", "custom") != "custom":
            raise InvalidRequest(f"tools[{position}]: only client tools ({{name, description, input_schema}}) "
                                 "are served", param="tools")
        tools.append({"type": "function", "function": {
            "name": tool["name"], "description": tool.get("description", ""),
            "parameters": tool.get("input_schema") or {"type": "object"}}})
    choice = body.tool_choice or {"type": "auto"}
    kind = choice.get("type")
    openai_choice = {"auto": "auto", "any": "required", "none": "none"}.get(kind)
    if kind == "tool":
        openai_choice = {"type": "function", "function": {"name": choice.get("name")}}
    if openai_choice is None:
        raise InvalidRequest("tool_choice.type must be auto, any, tool or none", param="tool_choice")
    return tool_plan(tools, openai_choice, parallel=not choice.get("disable_parallel_tool_use", False))


async def _prompt(service: GenerationService, body: CountTokensRequest, ctx: RequestContext):
    plan = _tools(body)
    ref, engine = service.engine(body.model, ctx.viewer)
    messages = []
    if body.system:
        messages.append({"role": "system", "content": _text(body.system, "system")})
    for i, message in enumerate(body.messages):
        messages += _message(message.role, message.content, f"messages[{i}]")
    ids = await service.prompts.chat(engine, messages, plan)
    return ref, engine, ids, plan


async def count_tokens(service: GenerationService, body: CountTokensRequest, ctx: RequestContext) -> dict:
    _, _, ids, _ = await _prompt(service, body, ctx)
    return {"input_tokens": len(ids)}


async def start_messages(service: GenerationService, body: MessagesRequest, ctx: RequestContext) -> Run:
    ref, engine, ids, plan = await _prompt(service, body, ctx)
    max_tokens = engine.check_prompt(ids, body.max_tokens)
    params = sampling_params(
        engine,
        max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        stop=body.stop_sequences,
        stop_param="stop_sequences",
        stream=body.stream,
        constraint=plan.constraint if plan is not None else None,
    )
    run = service.run(ref, engine, [ids], params, ctx)
    run.tools = plan
    return run


def _stop(finish_reason: str | None, stop_sequence: str | None, calls: int = 0) -> str:
    if stop_sequence is not None:
        return "stop_sequence"
    if calls and finish_reason != "length":
        return "tool_use"
    return _STOP_REASONS.get(finish_reason or "", "end_turn")


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except ValueError:  # a call cut off by max_tokens
        return {}
    return value if isinstance(value, dict) else {}


async def message_response(run: Run, model: str) -> dict:
    [choice] = await run.gather()
    if run.tools is None:
        content, calls = choice.text, []
    else:
        content, calls = parse_tool_calls(choice.text, _ID_PREFIX)
    blocks = [{"type": "text", "text": content}] if content or not calls else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)} for c in calls]
    return {
        "id": f"msg_{run.ctx.request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": _stop(choice.finish_reason, choice.stop_sequence, len(calls)),
        "stop_sequence": choice.stop_sequence,
        # Anthropic counts prompt tokens read from the cache apart from the others
        "usage": {"input_tokens": run.prompt_tokens - run.cached_tokens, "output_tokens": run.completion_tokens,
                  "cache_read_input_tokens": run.cached_tokens},
    }


class _Blocks:
    """Content blocks as events: a text block or a tool_use block open at a time."""

    def __init__(self):
        self.index = -1
        self.open: str | None = None

    def start(self, block: dict) -> list[dict]:
        out = self.stop()
        self.index += 1
        self.open = block["type"]
        return out + [{"type": "content_block_start", "index": self.index, "content_block": block}]

    def stop(self) -> list[dict]:
        if self.open is None:
            return []
        self.open = None
        return [{"type": "content_block_stop", "index": self.index}]

    def events(self, events: list) -> list[dict]:
        out: list[dict] = []
        for event in events:
            if isinstance(event, Text):
                if self.open != "text":
                    out += self.start({"type": "text", "text": ""})
                out.append({"type": "content_block_delta", "index": self.index,
                            "delta": {"type": "text_delta", "text": event.text}})
            elif isinstance(event, CallStart):
                out += self.start({"type": "tool_use", "id": event.id, "name": event.name, "input": {}})
            else:
                out.append({"type": "content_block_delta", "index": self.index,
                            "delta": {"type": "input_json_delta", "partial_json": event.text}})
        return out


async def message_events(run: Run, model: str) -> AsyncIterator[dict]:
    """Anthropic's event stream; leaving early ends the run (aborted, metered as cancelled)."""
    try:
        yield {"type": "message_start", "message": {
            "id": f"msg_{run.ctx.request_id}", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": run.prompt_tokens, "output_tokens": 0}}}
        blocks = _Blocks()
        stream = ToolCallStream(_ID_PREFIX) if run.tools is not None else None
        if stream is None:  # text only: the text block opens at once
            for event in blocks.start({"type": "text", "text": ""}):
                yield event
        finish, stop_sequence = None, None
        async for _, delta in run:
            if stream is not None:
                pieces = stream.feed(delta.text) + (stream.finish() if delta.finish_reason else [])
            else:
                pieces = [Text(delta.text)] if delta.text else []
            for event in blocks.events(pieces):
                yield event
            if delta.finish_reason:
                finish, stop_sequence = delta.finish_reason, delta.stop_sequence
        if blocks.index < 0:  # nothing came: an empty text block, as Anthropic sends
            for event in blocks.start({"type": "text", "text": ""}):
                yield event
        for event in blocks.stop():
            yield event
        calls = stream.calls if stream is not None else 0
        yield {"type": "message_delta", "delta": {"stop_reason": _stop(finish, stop_sequence, calls),
                                                  "stop_sequence": stop_sequence},
               "usage": {"output_tokens": run.completion_tokens}}
        yield {"type": "message_stop"}
    finally:
        await run.aclose()
