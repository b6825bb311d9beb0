"""Anthropic's Messages API on the same engines: a request becomes chat messages and
SamplingParams; the answer comes back as a message with content blocks, or as Anthropic's
stream of events (message_start, content_block_start/delta/stop, message_delta, message_stop).
Tool use (tools, tool_use and tool_result blocks) is not served yet: a clear 400.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from inferd.engine.generation import SamplingParams
from inferd.errors import InvalidRequest, UnsupportedInput
from inferd.protocol.anthropic import CountTokensRequest, MessagesRequest
from inferd.serving.context import RequestContext
from inferd.serving.generation import GenerationService, Run

_STOP_REASONS = {"length": "max_tokens"}


def _text(content: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for block in content:
        kind = block.get("type")
        if kind != "text":
            raise UnsupportedInput(f"{where}: content blocks of type {kind!r} are not supported yet (text only)")
        texts.append(str(block.get("text", "")))
    return "\n".join(texts)


def _prompt(service: GenerationService, body: CountTokensRequest):
    if body.tools:
        raise InvalidRequest("tools are not supported yet on the Anthropic surface")
    ref, engine = service.engine(body.model)
    messages = []
    if body.system:
        messages.append({"role": "system", "content": _text(body.system, "system")})
    for i, message in enumerate(body.messages):
        messages.append({"role": message.role, "content": _text(message.content, f"messages[{i}]")})
    ids = engine.encode(engine.apply_chat_template(messages), special=False)
    return ref, engine, ids


def count_tokens(service: GenerationService, body: CountTokensRequest) -> dict:
    _, _, ids = _prompt(service, body)
    return {"input_tokens": len(ids)}


def start_messages(service: GenerationService, body: MessagesRequest, ctx: RequestContext) -> Run:
    ref, engine, ids = _prompt(service, body)
    max_tokens = engine.check_prompt(ids, body.max_tokens)
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        stop=tuple(body.stop_sequences or ()),
        stream=body.stream,
    )
    return service.run(ref, engine, [ids], params, ctx)


def _stop(finish_reason: str | None, stop_sequence: str | None) -> str:
    if stop_sequence is not None:
        return "stop_sequence"
    return _STOP_REASONS.get(finish_reason or "", "end_turn")


async def message_response(run: Run, model: str) -> dict:
    [choice] = await run.gather()
    return {
        "id": f"msg_{run.ctx.request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": choice.text}],
        "stop_reason": _stop(choice.finish_reason, choice.stop_sequence),
        "stop_sequence": choice.stop_sequence,
        "usage": {"input_tokens": run.prompt_tokens, "output_tokens": run.completion_tokens},
    }


async def message_events(run: Run, model: str) -> AsyncIterator[dict]:
    """Anthropic's event stream; leaving early ends the run (aborted, metered as cancelled)."""
    try:
        yield {"type": "message_start", "message": {
            "id": f"msg_{run.ctx.request_id}", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": run.prompt_tokens, "output_tokens": 0}}}
        yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        finish, stop_sequence = None, None
        async for _, delta in run:
            if delta.text:
                yield {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": delta.text}}
            if delta.finish_reason:
                finish, stop_sequence = delta.finish_reason, delta.stop_sequence
        yield {"type": "content_block_stop", "index": 0}
        yield {"type": "message_delta", "delta": {"stop_reason": _stop(finish, stop_sequence),
                                                  "stop_sequence": stop_sequence},
               "usage": {"output_tokens": run.completion_tokens}}
        yield {"type": "message_stop"}
    finally:
        await run.aclose()
