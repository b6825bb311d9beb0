"""OpenAI chat completions: messages -> chat template -> the engine -> OpenAI's shapes.

Streams follow OpenAI's chunks: a first chunk per choice with the assistant role, content
deltas, the choice's ``finish_reason`` on its last chunk, ``usage`` (with DeepInfra's
``estimated_cost``) on the final chunk by default, or on an extra ``choices: []`` chunk
when ``stream_options.include_usage`` is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from inferd.engine.generation import TokenLogprob
from inferd.errors import InvalidRequest, UnsupportedInput
from inferd.protocol.openai import ChatCompletionRequest, ChatMessage
from inferd.serving.context import RequestContext
from inferd.serving.generation import GenerationService, Run, closing_chunks, common_params, constraint_of
from inferd.serving.tools import CallStream, tool_calls_of, tool_plan

_TEMPLATE_OFF_LOOP = 20_000  # characters of messages past which templating leaves the event loop


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
    tools = tool_plan(body.tools, body.tool_choice)
    if tools is not None and body.response_format is not None and body.response_format.type != "text":
        raise InvalidRequest("a forced tool call and a response_format cannot both shape the answer",
                             param="response_format")
    constraint = tools.constraint if tools is not None else constraint_of(body)
    ref, engine = service.engine(body.model)
    messages = [message_dict(m, i) for i, m in enumerate(body.messages)]
    kwargs = dict(body.chat_template_kwargs or {})
    if tools is not None:
        kwargs["tools"] = body.tools  # templates that know tools show them to the model
    if sum(len(m["content"]) for m in messages) > _TEMPLATE_OFF_LOOP:
        text = await asyncio.to_thread(engine.apply_chat_template, messages, **kwargs)
        ids = await asyncio.to_thread(engine.encode, text, special=False)
    else:
        text = engine.apply_chat_template(messages, **kwargs)
        ids = engine.encode(text, special=False)
    max_tokens = engine.check_prompt(ids, body.max_completion_tokens or body.max_tokens)
    params = common_params(
        body, max_tokens, n=body.n or 1, stream=body.stream,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None, constraint=constraint,
    )
    run = service.run(ref, engine, [ids], params, ctx)
    run.tools = tools
    return run


def _message(run: Run, text: str, finish_reason: str | None) -> tuple[dict, str | None]:
    """The assistant message of one choice, and its finish reason (a forced call: tool_calls)."""
    if run.tools is not None and finish_reason != "length":
        calls = tool_calls_of(text)
        if calls is not None:
            return {"role": "assistant", "content": None, "tool_calls": calls}, run.tools.finish_reason
    return {"role": "assistant", "content": text}, finish_reason


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
    calls: dict[int, CallStream] = {}  # a forced call as it streams, by choice
    async for _, delta in run:
        i = delta.index
        if i not in started:
            started.add(i)
            yield {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                        "finish_reason": None}]}
        text, finish_reason = delta.text, delta.finish_reason
        if run.tools is not None:  # a forced call: its id and name, then its arguments as they come
            stream = calls.setdefault(i, CallStream())
            pieces = stream.feed(text)
            text = ""
            if finish_reason:
                pieces += stream.finish()
                if tool_calls_of(stream.text) is not None:
                    finish_reason = run.tools.finish_reason
                elif stream.start is None:
                    text = stream.text  # no call came out: what there is, as text
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
