"""The text-generation engine interface: what the serving layer sees of any LLM runtime.

``generate(request)`` is an async iterator of ``SequenceDelta`` (one per new piece of a
sequence, each carrying only what is new), ending when every sequence of the request has a
``finish_reason``. Leaving the iterator early (the client went away) aborts the request in
the runtime; ``abort(request_id)`` does the same from outside. Runtimes own tokenisation
of the output (detokenising, stop strings, logprob token strings) so they answer alike.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferd.engine.base import Engine
from inferd.engine.grammar import Constraint, compile_constraint
from inferd.errors import InvalidRequest


@dataclass(slots=True)
class SamplingParams:
    """Per-request parameters, already validated and defaulted by the serving layer."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: int | None = None  # None: none; k >= 0: the sampled token's plus the top k
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (completions echo)
    ignore_eos: bool = False
    stream: bool = False  # whether deltas are wanted as they come (else once, at the end)
    constraint: Constraint | None = None  # structured output (engine/grammar.py)
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit before sampling

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-5 or self.top_k == 1


@dataclass(frozen=True, slots=True)
class Adapter:
    """A LoRA adapter a request runs with: its name, a small integer id the runtime keys its
    weights by (unique per adapter in this process), and its directory (PEFT format)."""

    name: str
    id: int
    path: str


@dataclass(slots=True)
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    adapter: Adapter | None = None  # run with this LoRA adapter on the base model (vLLM)


@dataclass(slots=True)
class TopLogprob:
    token_id: int
    token: str
    logprob: float


@dataclass(slots=True)
class TokenLogprob:
    """One position: the chosen token with its logprob, and the top alternatives."""

    token_id: int
    token: str
    logprob: float
    top: list[TopLogprob] = field(default_factory=list)


@dataclass(slots=True)
class SequenceDelta:
    """What is new in sequence ``index`` of a request since its previous delta."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_sequence: str | None = None  # the stop string that ended the sequence, if one did
    # on the first delta of a sequence when asked for: the prompt's tokens (first has no logprob)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    # on the first delta of a sequence, where the runtime says: prompt tokens its prefix cache had
    cached_prompt_tokens: int | None = None


class GenerationEngine(Engine):
    """A loaded causal LM behind one scheduler; subclasses are the runtimes' engines."""

    context_length: int
    eos_token_ids: frozenset[int]
    tokenizer: Any  # a transformers tokenizer

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[SequenceDelta]:
        """Queue the request and yield its sequences' deltas; raises ``Overloaded`` when full."""

    @abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop a request's sequences and free their slots (no-op when already done)."""

    # --- the model's Hugging Face tokenizer (``self.tokenizer``, set by ``start()``)

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of a prompt text (with the model's BOS when ``special``)."""
        return self.tokenizer.encode(text, add_special_tokens=special)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
                            **kwargs: Any) -> str:
        """The chat prompt the model was trained on (with the generation prompt, unless asked not to)."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    @property
    def capacity(self) -> int:
        """Requests this engine takes in flight (running and queued) before it answers 429."""
        limits = self.ref.spec.limits
        return limits.max_batch_size + limits.queue_size

    @property
    def knows_tools(self) -> bool:
        """Whether the chat template renders ``tools`` (else the serving layer writes its own tool prompt)."""
        template = getattr(self.tokenizer, "chat_template", None)
        return isinstance(template, str) and "tools" in template

    async def prepare(self, constraint: Constraint) -> None:
        """Compile a structured-output constraint off the event loop (cached; a bad schema -> 400)."""
        await asyncio.to_thread(compile_constraint, constraint)

    def check_prompt(self, ids: Sequence[int], max_tokens: int | None, param: str = "messages") -> int:
        """The max_tokens to use for a prompt of token ``ids``; a clear 400 (never a failed batch
        later) for an empty prompt, token ids outside the vocabulary, or a prompt or budget past
        the context."""
        if not ids:
            raise InvalidRequest("the prompt is empty (0 tokens)", param=param)
        vocab = len(self.tokenizer)
        if max(ids) >= vocab or min(ids) < 0:
            bad = max(ids) if max(ids) >= vocab else min(ids)
            raise InvalidRequest(f"the prompt has token id {bad}; this model's vocabulary has {vocab}", param=param)
        prompt_tokens = len(ids)
        room = self.context_length - prompt_tokens
        if room <= 0:
            raise InvalidRequest(
                f"the prompt is {prompt_tokens} tokens; this model's context is {self.context_length} tokens",
                param=param,
            )
        if max_tokens is None:
            return room
        if max_tokens > room:
            raise InvalidRequest(
                f"max_tokens {max_tokens} + the prompt's {prompt_tokens} tokens exceeds this model's context "
                f"of {self.context_length} tokens",
                param="max_tokens",
            )
        return max_tokens
