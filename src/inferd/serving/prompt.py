"""The one prompt pipeline every text-generation surface calls (OpenAI chat and completions,
native text generation, Anthropic messages): template -> tokens -> checks -> sampling parameters.

- **Template**: the model's own chat template only. A request's ``chat_template_kwargs`` may
  carry data the template reads (``TEMPLATE_KWARGS``), never a template, never ``tokenize`` or
  ``return_*``; anything else is a 400 naming the key.
- **Off the event loop, bounded**: rendering and tokenising run on a small thread pool of their
  own, and a render that takes longer than ``template_timeout_s`` fails its request with a 400
  (the loop, and every other request, never waits on it).
- **Checks before work**: list sizes (``max_messages``, ``max_inputs_per_request``), a request
  that can never fit the model's queue (a 413 that says why, not a 429 to retry), then the
  engine's own checks (empty prompt, ids outside the vocabulary, the context).
- **Sampling parameters**: ``sampling_params`` validates what the engines cannot take (empty
  stop strings, seeds past 64 bits, token ids in ``logit_bias`` outside the vocabulary) as 400s.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from inferd.engine.generation import GenerationEngine, SamplingParams
from inferd.errors import InputTooLarge, InvalidRequest
from inferd.serving.tools import ToolPlan, prepare_messages
from inferd.settings import Settings

T = TypeVar("T")

# what a request may pass to the chat template: data the template reads, and their types
TEMPLATE_KWARGS: dict[str, tuple[type, ...]] = {
    "add_generation_prompt": (bool,),
    "continue_final_message": (bool,),
    "enable_thinking": (bool,),
    "thinking": (bool,),
    "documents": (list,),
}
MAX_STOP_CHARS = 256
MAX_LOGIT_BIAS = 300  # OpenAI's bound on logit_bias entries
# No token is longer than this (the longest seen: SmolLM2's newline and 80 spaces, 81; byte-level
# vocabularies' 128 bytes): a prompt of more characters than context x this cannot fit, and is
# refused before a template renders it or a tokenizer reads it (work a timeout cannot take back:
# a 20 MB message kept the template's thread busy long past its 5 s bound).
MAX_CHARS_PER_TOKEN = 256
SEED_SPACE = 1 << 63


def template_kwargs(value: dict[str, Any] | None, max_items: int) -> dict[str, Any]:
    """A request's ``chat_template_kwargs`` checked against the allow-list."""
    if not value:
        return {}
    out = {}
    for key, item in value.items():
        kinds = TEMPLATE_KWARGS.get(key)
        if kinds is None:
            raise InvalidRequest(f"chat_template_kwargs: {key!r} is not accepted (accepted: "
                                 f"{', '.join(sorted(TEMPLATE_KWARGS))})", param="chat_template_kwargs")
        if not isinstance(item, kinds):
            raise InvalidRequest(f"chat_template_kwargs: {key!r} must be a {kinds[0].__name__}",
                                 param="chat_template_kwargs")
        if isinstance(item, list) and len(item) > max_items:
            raise InputTooLarge(f"chat_template_kwargs: {key!r} has {len(item)} items; at most {max_items}",
                                param="chat_template_kwargs")
        out[key] = item
    return out


class PromptPipeline:
    def __init__(self, settings: Settings):
        self.max_messages = settings.max_messages
        self.max_prompts = settings.max_inputs_per_request
        self.timeout_s = settings.template_timeout_s
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prompt")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _off_loop(self, work: Callable[[], T], what: str) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._pool, work)
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise InvalidRequest(f"{what} took longer than {self.timeout_s:g} s; send a shorter request") from None

    async def chat(self, engine: GenerationEngine, messages: list[dict[str, Any]], plan: ToolPlan | None,
                   kwargs: dict[str, Any] | None = None) -> list[int]:
        """The token ids of a conversation, rendered by the model's own chat template."""
        if len(messages) > self.max_messages:
            raise InputTooLarge(f"{len(messages)} messages in one request; at most {self.max_messages}",
                                param="messages")
        within_context(engine, characters(messages), "messages")
        extra = template_kwargs(kwargs, self.max_prompts)
        add_generation_prompt = extra.pop("add_generation_prompt", not extra.get("continue_final_message", False))
        messages, tool_kwargs = prepare_messages(messages, plan, engine.knows_tools)

        def render() -> list[int]:
            try:
                text = engine.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                  **tool_kwargs, **extra)
            except Exception as exc:  # noqa: BLE001 - the template's own refusals (raise_exception) and type errors
                raise InvalidRequest(f"the model's chat template cannot render these messages: {exc}",
                                     param="messages") from None
            return engine.encode(text, special=False)

        return await self._off_loop(render, "rendering the chat template")

    async def texts(self, engine: GenerationEngine, prompts: Sequence[str | list[int]], param: str) -> list[list[int]]:
        """Token ids of raw prompts (strings get the model's BOS; token-id lists are taken as they are)."""
        if len(prompts) > self.max_prompts:
            raise InputTooLarge(f"{len(prompts)} prompts in one request; at most {self.max_prompts}", param=param)
        fits(engine, len(prompts), param)
        for prompt in prompts:
            if isinstance(prompt, str):
                within_context(engine, len(prompt), param)

        def encode() -> list[list[int]]:
            return [engine.encode(p, special=True) if isinstance(p, str) else list(p) for p in prompts]

        return await self._off_loop(encode, "tokenising the prompt")


def characters(value: Any) -> int:
    """The characters of every string in a JSON-like value (messages: contents, names, calls)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total


def within_context(engine: GenerationEngine, chars: int, param: str) -> None:
    """A prompt too long to fit the model's context whatever its tokenizer does is a 400 now."""
    if chars > engine.context_length * MAX_CHARS_PER_TOKEN:
        raise InvalidRequest(f"the prompt is {chars} characters: more than this model's context of "
                             f"{engine.context_length} tokens can hold", param=param)


def fits(engine: GenerationEngine, requests: int, param: str) -> None:
    """A request of ``requests`` engine requests that could never be queued at once is a 413, not a 429."""
    capacity = engine.capacity
    if requests > capacity:
        raise InputTooLarge(f"{requests} prompts in one request can never be served at once: model "
                            f"{engine.name} takes at most {capacity} requests in flight", param=param)


def _stop(stop: str | Sequence[str] | None, param: str) -> tuple[str, ...]:
    strings = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    for s in strings:
        if not s:
            raise InvalidRequest("stop strings must not be empty", param=param)
        if len(s) > MAX_STOP_CHARS:
            raise InvalidRequest(f"stop strings are at most {MAX_STOP_CHARS} characters", param=param)
    return strings


def _logit_bias(engine: GenerationEngine, bias: dict[str, float] | None) -> dict[int, float] | None:
    if not bias:
        return None
    if len(bias) > MAX_LOGIT_BIAS:
        raise InvalidRequest(f"logit_bias has {len(bias)} entries; at most {MAX_LOGIT_BIAS}", param="logit_bias")
    vocab = len(engine.tokenizer)
    out = {}
    for key, value in bias.items():
        token = int(key) if isinstance(key, int) or (isinstance(key, str) and key.isdigit()) else -1
        if not 0 <= token < vocab:
            raise InvalidRequest(f"logit_bias: {key!r} is not a token id of this model (0..{vocab - 1})",
                                 param="logit_bias")
        if not (isinstance(value, int | float) and math.isfinite(value) and -100 <= value <= 100):
            raise InvalidRequest("logit_bias values are numbers from -100 to 100", param="logit_bias")
        out[token] = float(value)
    return out


def sampling_params(engine: GenerationEngine, max_tokens: int, *, stop=None, stop_param: str = "stop",
                    seed: int | None = None, logit_bias: dict | None = None, **fields: Any) -> SamplingParams:
    """SamplingParams for any surface; what the engines cannot take is a 400 here."""
    if seed is not None:
        if not -SEED_SPACE <= seed < 2 * SEED_SPACE:
            raise InvalidRequest("seed must fit in 64 bits", param="seed")
        seed %= SEED_SPACE  # one seed space for both runtimes; the same seed gives the same answer
    return SamplingParams(max_tokens=max_tokens, stop=_stop(stop, stop_param), seed=seed,
                          logit_bias=_logit_bias(engine, logit_bias), **fields)
