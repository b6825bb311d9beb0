"""OpenAI chat completions: messages -> chat template -> the engine -> OpenAI's shapes.

Streams follow OpenAI's chunks: a first chunk per choice with the assistant role, content
deltas, the choice's ``finish_reason`` on its last chunk, ``usage`` (with DeepInfra's
``estimated_cost``) on the final chunk by default, or on an extra ``choices: []`` chunk
when ``stream_options.include_usage`` is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from inferd.engine.generation import TokenLogprob
from inferd.errors import InvalidRequest, UnsupportedInput
from inferd.protocol.openai import ChatCompletionRequest, ChatMessage
from inferd.serving.context import RequestContext
from inferd.serving.generation import GenerationService, Run, closing_chunks, common_params, constraint_of
from inferd.serving.tool_calls import CallStart, Text, ToolCallStream
from inferd.serving.tool_calls import parse as parse_tool_calls
from inferd.serving.tools import tool_plan


def message_dict(message: ChatMessage, index: int) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("text", "")))
            else:
                raise UnsupportedInput(f"messages[{index}]: content parts of type {kind!r} are not supported by "
                                       "this model (text only)", param="messages")
        content = "\n".join(texts)
    out: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role, "content": content or ""}
    for key in ("name", "tool_calls", "tool_call_id"):
        value = getattr(message, key)
        if value is not None:
            out[key] = value
    return out


def chat_logprobs(items: list[TokenLogprob] | None) -> dict | None:
    if items is None:
        return None
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.token.encode()),
                "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode())} for t in lp.top],
            }
            for lp in items
        ]
    }


async def start_chat(service: GenerationService, body: ChatCompletionRequest, ctx: RequestContext) -> Run:
    tools = tool_plan(body.tools, body.tool_choice, body.parallel_tool_calls)
    if tools is not None and body.response_format is not None and body.response_format.type != "text":
        raise InvalidRequest("tools and a response_format cannot both shape the answer; "
                             "send tool_choice \"none\" for a structured text answer", param="response_format")
    constraint = tools.constraint if tools is not None else constraint_of(body)
    ref, engine = service.engine(body.model, ctx.viewer)
    messages = [message_dict(m, i) for i, m in enumerate(body.messages)]
    ids = await service.prompts.chat(engine, messages, tools, body.chat_template_kwargs)
    max_tokens = engine.check_prompt(ids, body.max_completion_tokens or body.max_tokens)
    params = common_params(
        engine, body, max_tokens, n=body.n or 1, stream=body.stream,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None, constraint=constraint,
    )
    run = service.run(ref, engine, [ids], params, ctx)
    run.tools = tools
    return run


def _message(run: Run, text: str, finish_reason: str | None) -> tuple[dict, str | None]:
    """The assistant message of one choice and its finish reason (``tool_calls`` when it calls)."""
    if run.tools is None:
        return {"role": "assistant", "content": text}, finish_reason
    content, calls = parse_tool_calls(text)
    if not calls:
        return {"role": "assistant", "content": content}, finish_reason
    return {"role": "assistant", "content": content or None, "tool_calls": [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
    ]}, finish_reason if finish_reason == "length" else run.tools.finish_reason


def _tool_deltas(events: list) -> tuple[str, list[dict]]:
    """A tool-call stream's events as OpenAI's delta content and ``tool_calls`` pieces."""
    text, pieces = "", []
    for event in events:
        if isinstance(event, Text):
            text += event.text
        elif isinstance(event, CallStart):
            pieces.append({"index": event.index, "id": event.id, "type": "function",
                           "function": {"name": event.name, "arguments": ""}})
        else:
            pieces.append({"index": event.index, "function": {"arguments": event.text}})
    return text, pieces


async def chat_response(run: Run, model: str) -> dict:
    choices = await run.gather()
    return {
        "id": f"chatcmpl-{run.ctx.request_id}",
        "object": "chat.completion",
        "created": run.created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": message,
                "logprobs": chat_logprobs(c.logprobs),
                "finish_reason": finish_reason,
            }
            for i, c in enumerate(choices)
            for message, finish_reason in [_message(run, c.text, c.finish_reason)]
        ],
        "usage": run.usage,
    }


async def _chat_chunks(run: Run, model: str, include_usage: bool) -> AsyncIterator[dict]:
    base = {"id": f"chatcmpl-{run.ctx.request_id}", "object": "chat.completion.chunk", "created": run.created,
            "model": model}
    started: set[int] = set()
    unfinished = run.params.n
    last: dict = {**base, "choices": []}
    calls: dict[int, ToolCallStream] = {}  # by choice, when the request has tools
    async for _, delta in run:
        i = delta.index
        if i not in started:
            started.add(i)
            yield {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                        "finish_reason": None}]}
        text, finish_reason = delta.text, delta.finish_reason
        if run.tools is not None:  # content and calls apart: ids and names, then arguments as they come
            stream = calls.setdefault(i, ToolCallStream())
            text, pieces = _tool_deltas(stream.feed(text) + (stream.finish() if finish_reason else []))
            if finish_reason and stream.calls and finish_reason != "length":
                finish_reason = run.tools.finish_reason
            if text and pieces:  # content that came before a call goes first
                yield {**base, "choices": [{"index": i, "delta": {"content": text}, "logprobs": None,
                                            "finish_reason": None}]}
                text = ""
            for piece in pieces:
                yield {**base, "choices": [{"index": i, "delta": {"tool_calls": [piece]}, "logprobs": None,
                                            "finish_reason": None}]}
        chunk = {**base, "choices": [{"index": i, "delta": {"content": text} if text else {},
                                      "logprobs": chat_logprobs(delta.logprobs),
                                      "finish_reason": finish_reason}]}
        if delta.finish_reason:
            unfinished -= 1
            if not unfinished:
                last = chunk
                continue  # sent below, once the run has been charged
        if text or finish_reason or delta.logprobs:
            yield chunk
    for chunk in closing_chunks(last, base, run.usage, include_usage):
        yield chunk


async def chat_chunks(run: Run, model: str, include_usage: bool) -> AsyncIterator[dict]:
    """Leaving early (the client went away) ends the run at once: aborted, metered as cancelled."""
    try:
        async for chunk in _chat_chunks(run, model, include_usage):
            yield chunk
    finally:
        await run.aclose()
