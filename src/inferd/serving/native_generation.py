"""DeepInfra's native text-generation: ``input`` as is, ``results[{generated_text}]``.

Streaming sends one event per generated token, ``{"token": {id, text, logprob, special},
"generated_text": null, "details": null}``; the last event carries the whole
``generated_text`` and ``details`` (finish reason, token counts, request id and status).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from inferd.catalog import ModelRef
from inferd.protocol.inference import TextGenerationIn
from inferd.serving.context import RequestContext
from inferd.serving.generation import GenerationService, Run, common_params, constraint_of


async def start_native(service: GenerationService, body: TextGenerationIn, ref: ModelRef,
                       ctx: RequestContext) -> Run:
    constraint = constraint_of(body)
    ref, engine = service.engine_of(ref)
    [ids] = await service.prompts.texts(engine, [body.input], "input")
    max_tokens = engine.check_prompt(ids, body.max_new_tokens, "input")
    params = common_params(engine, body, max_tokens, n=body.num_responses, stream=body.stream,
                           logprobs=0 if body.stream else None, constraint=constraint)
    return service.run(ref, engine, [ids], params, ctx)


def _status(run: Run) -> dict:
    charge = run.charge
    return {
        "status": "succeeded",
        "runtime_ms": charge.runtime_ms if charge else run.ctx.elapsed_ms(),
        "cost": charge.cost_usd if charge else 0.0,
        "tokens_input": run.prompt_tokens,
        "tokens_generated": run.completion_tokens,
    }


async def native_response(run: Run) -> dict:
    choices = await run.gather()
    return {
        "results": [{"generated_text": c.text} for c in choices],
        "num_tokens": run.completion_tokens,
        "num_input_tokens": run.prompt_tokens,
        "request_id": run.ctx.request_id,
        "inference_status": _status(run),
    }


async def _native_events(run: Run) -> AsyncIterator[dict]:
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    pending: dict | None = None
    eos = run.engine.eos_token_ids
    async for _, delta in run:
        i = delta.index
        texts[i] = texts.get(i, "") + delta.text
        lps = delta.logprobs or []
        for j, token in enumerate(delta.token_ids):
            if pending is not None:
                yield pending
            last = j == len(delta.token_ids) - 1
            pending = {
                "token": {
                    "id": token,
                    "text": delta.text if last else "",
                    "logprob": lps[j].logprob if j < len(lps) else None,
                    "special": token in eos,
                },
                "generated_text": None,
                "details": None,
            }
            if run.params.n > 1:
                pending["index"] = i
        if delta.finish_reason:
            finish[i] = delta.finish_reason
    if pending is not None:
        pending["generated_text"] = texts.get(0, "")
        pending["details"] = {
            "finish_reason": finish.get(0),
            "generated_tokens": run.completion_tokens,
            "input_length": run.prompt_tokens,
            "request_id": run.ctx.request_id,
            "inference_status": _status(run),
        }
        yield pending


async def native_events(run: Run) -> AsyncIterator[dict]:
    """Leaving early (the client went away) ends the run at once: aborted, metered as cancelled."""
    try:
        async for chunk in _native_events(run):
            yield chunk
    finally:
        await run.aclose()
