"""OpenAI text completions: one or more prompts, ``echo``, integer ``logprobs``.

Choice ``i`` answers prompt ``i // n``. Logprobs come in the legacy shape: ``tokens``,
``token_logprobs``, ``top_logprobs`` (token -> logprob maps) and ``text_offset`` (each
token's character offset in the choice's text); with ``echo`` the prompt's tokens lead,
the first of them without a logprob.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from inferd.engine.generation import TokenLogprob
from inferd.errors import InvalidRequest
from inferd.protocol.openai import CompletionRequest
from inferd.serving.context import RequestContext
from inferd.serving.generation import GenerationService, Run, closing_chunks, common_params, constraint_of


def _prompts(body: CompletionRequest) -> list[str | list[int]]:
    prompt = body.prompt
    if not prompt and not isinstance(prompt, str):
        raise InvalidRequest("prompt must not be an empty list", param="prompt")
    if isinstance(prompt, str) or isinstance(prompt[0], int):
        return [prompt]
    return list(prompt)


class LegacyLogprobs:
    """Builds the legacy logprobs object of one choice, chunk by chunk."""

    def __init__(self) -> None:
        self.offset = 0

    def block(self, items: list[TokenLogprob | None], tokens: list[str] | None = None) -> dict:
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for j, lp in enumerate(items):
            token = lp.token if lp is not None else (tokens[j] if tokens else "")
            out["tokens"].append(token)
            out["token_logprobs"].append(lp.logprob if lp is not None else None)
            out["top_logprobs"].append({t.token: t.logprob for t in lp.top} if lp is not None else None)
            out["text_offset"].append(self.offset)
            self.offset += len(token)
        return out


async def start_completion(service: GenerationService, body: CompletionRequest, ctx: RequestContext) -> Run:
    constraint = constraint_of(body)
    ref, engine = service.engine(body.model, ctx.viewer)
    prompts = await service.prompts.texts(engine, _prompts(body), "prompt")
    max_tokens = min(engine.check_prompt(p, body.max_tokens, "prompt") for p in prompts)
    want = body.logprobs
    params = common_params(engine, body, max_tokens, n=body.n or 1, stream=body.stream, logprobs=want,
                           prompt_logprobs=want if (body.echo and want is not None) else None, constraint=constraint)
    return service.run(ref, engine, prompts, params, ctx)


def _prompt_tokens(run: Run, p: int) -> list[str]:
    return [run.engine.decode([t]) for t in run.prompts[p][:1]]


async def completion_response(run: Run, model: str, echo: bool) -> dict:
    choices = await run.gather()
    n = run.params.n
    out = []
    for i, c in enumerate(choices):
        p = i // n
        text = c.text
        logprobs = None
        if c.logprobs is not None:
            builder = LegacyLogprobs()
            items: list[TokenLogprob | None] = list(c.logprobs)
            head: dict | None = None
            if echo:
                head = builder.block(c.prompt_logprobs or [], _prompt_tokens(run, p))
            logprobs = builder.block(items)
            if head is not None:
                logprobs = {k: head[k] + logprobs[k] for k in logprobs}
        if echo:
            text = run.engine.decode(run.prompts[p]) + text
        out.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": c.finish_reason})
    return {"id": f"cmpl-{run.ctx.request_id}", "object": "text_completion", "created": run.created, "model": model,
            "choices": out, "usage": run.usage}


async def _completion_chunks(run: Run, model: str, echo: bool, include_usage: bool) -> AsyncIterator[dict]:
    base = {"id": f"cmpl-{run.ctx.request_id}", "object": "text_completion", "created": run.created, "model": model}
    n = run.params.n
    builders: dict[int, LegacyLogprobs] = {}
    unfinished = n * len(run.prompts)
    last: dict = {**base, "choices": []}
    async for p, delta in run:
        i = p * n + delta.index
        text, logprobs = delta.text, None
        first = i not in builders
        builder = builders.setdefault(i, LegacyLogprobs())
        if first and echo:
            text = run.engine.decode(run.prompts[p]) + text
        if delta.logprobs is not None:
            head = builder.block(delta.prompt_logprobs or [], _prompt_tokens(run, p)) if first and echo else None
            logprobs = builder.block(delta.logprobs)
            if head is not None:
                logprobs = {k: head[k] + logprobs[k] for k in logprobs}
        chunk = {**base, "choices": [{"index": i, "text": text, "logprobs": logprobs,
                                      "finish_reason": delta.finish_reason}]}
        if delta.finish_reason:
            unfinished -= 1
            if not unfinished:
                last = chunk
                continue
        if text or delta.finish_reason or logprobs:
            yield chunk
    for chunk in closing_chunks(last, base, run.usage, include_usage):
        yield chunk


async def completion_chunks(run: Run, model: str, echo: bool, include_usage: bool) -> AsyncIterator[dict]:
    """Leaving early (the client went away) ends the run at once: aborted, metered as cancelled."""
    try:
        async for chunk in _completion_chunks(run, model, echo, include_usage):
            yield chunk
    finally:
        await run.aclose()
