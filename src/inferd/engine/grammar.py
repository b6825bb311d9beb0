"""Structured output: grammars that constrain decoding token by token (llguidance).

The serving layer turns ``response_format`` into a ``Constraint`` (JSON object, JSON schema
or regex). ``compile_constraint`` builds its llguidance grammar and checks it; the result is
cached by the constraint's text, so a schema compiles once however many requests use it. A
schema or regex llguidance rejects is a 400 that names the problem.

The transformers runtime keeps one ``LLMatcher`` per sequence: before sampling, the matcher's
token mask sets every token the grammar cannot take next to -inf; after sampling, the token
is consumed. It also keeps the answer valid within the token budget: it plans the shortest
way to close what is open (``GrammarFactory.closing_plan``) and, when the budget left is just
enough for that plan, forces it token by token, so even a model that would nest forever
returns JSON that parses. Only when the closing itself cannot fit does a sequence end with
``length`` (its text as it is); a state that could end as it is (text beside tools) is never
forced, but continuations the budget could not close (another tool call) are dropped. The vLLM
runtime runs the same matchers in inferd's own vLLM logits processor (engine/vllm_grammar.py).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from inferd.errors import InvalidRequest

_JSON_OPTIONS = {"whitespace_flexible": False}  # compact JSON: no runs of blank space to wander in


@dataclass(frozen=True, slots=True)
class Constraint:
    """What the output must match. ``kind``: "json_object" | "json_schema" | "regex"."""

    kind: str
    source: str = ""  # the schema as canonical JSON, the regex, or the lark grammar
    param: str = "response_format"  # the request field a compile error names

    @classmethod
    def json_object(cls) -> Constraint:
        return cls("json_object")

    @classmethod
    def json_schema(cls, schema: dict[str, Any]) -> Constraint:
        # keys keep their order: the grammar writes properties in the schema's order
        return cls("json_schema", json.dumps(schema, separators=(",", ":")))

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        return cls("regex", pattern)

    @classmethod
    def lark(cls, grammar: str, param: str) -> Constraint:
        """A llguidance lark grammar (tool calls: text, or calls whose JSON follows the tools' schemas)."""
        return cls("lark", grammar, param)

    @property
    def schema(self) -> dict[str, Any] | None:
        if self.kind == "json_object":
            return {"type": "object"}
        return json.loads(self.source) if self.kind == "json_schema" else None


@functools.lru_cache(maxsize=512)
def compile_constraint(constraint: Constraint) -> str:
    """The llguidance grammar for a constraint; raises InvalidRequest naming the problem."""
    from llguidance import LLMatcher

    param = constraint.param
    try:
        if constraint.kind == "regex":
            grammar = LLMatcher.grammar_from_regex(constraint.source)
        elif constraint.kind == "lark":
            grammar = LLMatcher.grammar_from_lark(constraint.source)
        else:
            grammar = LLMatcher.grammar_from_json_schema(constraint.schema, defaults=_JSON_OPTIONS)
    except ValueError as exc:
        raise InvalidRequest(f"the {constraint.kind} cannot be compiled: {exc}", param=param) from None
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise InvalidRequest(f"the {constraint.kind} cannot be used: {messages[0]}", param=param)
    return grammar


# Closing a structure as soon as possible: at each step of a closing plan, the first of these a
# grammar allows (closers and the comma that ends a number first, then the shortest values,
# then what opens), else the longest
# allowed token (in a key or an enum value that completes it soonest).
_CLOSING_PREFERENCE = ('"', "}", "]", ",", "0", "null", "false", "true", "a", ":", "[", "{", " ")


class GrammarFactory:
    """Matchers for one tokenizer (building the llguidance tokenizer takes ~1 s: once per model)."""

    def __init__(self, hf_tokenizer, vocab_size: int, eos_token_ids):
        from llguidance.hf import from_tokenizer

        self.vocab_size = vocab_size
        self.eos = sorted(eos_token_ids)[0]
        self.tokenizer = from_tokenizer(hf_tokenizer, n_vocab=vocab_size, eos_token=self.eos)
        import torch

        pieces = hf_tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(hf_tokenizer)))))
        lengths = [len(p) if p else 0 for p in pieces] + [0] * (vocab_size - len(pieces))
        self._lengths = torch.tensor(lengths)
        self._preference = []
        for text in _CLOSING_PREFERENCE:
            ids = hf_tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1:
                self._preference.append(ids[0])
        # llguidance prepares its token tables on the first mask (~0.9 s here): pay that now,
        # at start-up, not in the first structured request's time to first token
        masks([BudgetedMatcher(self, Constraint.json_object(), 16)], [0], vocab_size)

    def closing_plan(self, matcher, limit: int) -> list[int] | None:
        """Tokens that take the matcher from where it is to a complete match (ending with EOS
        when the grammar could go on), or None if none is found within ``limit`` tokens."""
        m = matcher.deep_copy()
        plan: list[int] = []
        while len(plan) <= limit:
            if m.is_stopped():
                return plan
            if m.is_accepting():
                return plan + [self.eos]
            step = m.compute_ff_tokens()  # what the grammar forces (a required key, say)
            if not step:
                allowed = allowed_tokens(m, self.vocab_size)
                token = next((t for t in self._preference if allowed[t]), None)
                if token is None:  # a key or a value from a list: the longest piece gets there first
                    candidates = allowed.nonzero().flatten()
                    if not len(candidates):
                        return None
                    token = int(candidates[self._lengths[candidates].argmax()])
                step = [token]
            if not m.consume_tokens(step):
                return None
            plan += step
        return None

    def matcher(self, constraint: Constraint):
        from llguidance import LLMatcher

        matcher = LLMatcher(self.tokenizer, compile_constraint(constraint), log_level=0)
        if matcher.is_error():
            raise InvalidRequest(f"the {constraint.kind} cannot be used: {matcher.get_error()}",
                                 param=constraint.param)
        return matcher


def allowed_tokens(matcher, vocab_size: int):
    """The matcher's next-token mask as a bool tensor [vocab_size] (plain torch, no compile)."""
    import torch

    words = torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.int32)
    return _unpack(words.unsqueeze(0), vocab_size)[0]


def _unpack(words, vocab_size: int):
    """int32 bitmasks [rows, words] -> bool [rows, vocab_size]; bit j of word i is token 32 i + j
    (a model's vocabulary padded past the tokenizer's gets False there)."""
    import torch

    bits = ((words.unsqueeze(2) >> torch.arange(32, dtype=torch.int32)) & 1).flatten(1).bool()
    if bits.shape[1] < vocab_size:
        bits = torch.cat([bits, torch.zeros((bits.shape[0], vocab_size - bits.shape[1]), dtype=torch.bool)], dim=1)
    return bits[:, :vocab_size]


_SEARCH = 256  # the longest closing plan searched for when checking a continuation
_FEW = 64  # continuations checked one by one when a whole answer could end here; more: free text
_GROWTH = 8  # a bound on how much a closing plan grows per generated token: opening an object
# whose schema requires keys adds them all to the plan at once


class BudgetedMatcher:
    """A sequence's matcher that keeps its answer valid within ``max_tokens``.

    The mask for the next token (``masks``) is the grammar's, until the budget left could be
    needed to close what is open; then the closing plan's tokens, one a step.
    The plan is made again only when the budget could have come within reach of it (it grows
    by at most _GROWTH a token), so it costs a few searches per sequence, most near the end.
    ``consume(token)`` advances it; ``done`` says the grammar has finished.
    """

    __slots__ = ("factory", "matcher", "max_tokens", "forced", "plan_length", "plan_at")

    def __init__(self, factory: GrammarFactory, constraint: Constraint, max_tokens: int):
        self.factory = factory
        self.matcher = factory.matcher(constraint)
        self.max_tokens = max_tokens
        self.forced: list[int] = []
        self.plan_length = 0
        self.plan_at = -1  # tokens generated when the last plan was made (-1: none yet)

    def forced_token(self, generated: int) -> int | None:
        """The closing plan's next token when the budget requires it, else None (free: the grammar's mask)."""
        left = self.max_tokens - generated
        if not self.forced and self.matcher.is_accepting():
            return None  # whole as it is (text beside tools, a regex's tail): ``safe_continuations`` decides
        if not self.forced and (self.plan_at < 0 or left <= self.plan_length + _GROWTH * (generated - self.plan_at)
                                + _GROWTH):
            plan = self.factory.closing_plan(self.matcher, left)
            # none within the budget: look again next step, the model may close things itself
            self.plan_length, self.plan_at = (len(plan) if plan is not None else left + 1), generated
            if plan is not None and len(plan) + _GROWTH >= left:  # one more free token could be too many
                self.forced = plan
        return self.forced[0] if self.forced else None

    def safe_continuations(self, allowed, generated: int) -> None:
        """In a state that could end here (after a tool call, say), drop from ``allowed`` the
        tokens that would open something the budget left cannot close (another call), so the
        answer ends whole instead of cut off. Only for a short list of continuations: free text
        that could end anywhere is left as it is."""
        left = self.max_tokens - generated - 1  # after the next token
        for token in allowed.nonzero().flatten().tolist():
            if token == self.factory.eos:
                continue
            m = self.matcher.deep_copy()
            if not m.consume_token(token):
                allowed[token] = False
            elif not m.is_accepting() and left <= _SEARCH:
                plan = self.factory.closing_plan(m, left)
                if plan is None or len(plan) > left:  # the plan ends with EOS, which needs its own step
                    allowed[token] = False

    def consume(self, token: int) -> None:
        self.matcher.consume_token(token)
        if self.forced:
            self.forced.pop(0)

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped()


_EXECUTOR = None


def masks(rows: list[BudgetedMatcher], generated: list[int], vocab: int):
    """Next-token masks for several sequences at once, bool [len(rows), vocab]: forced rows
    allow their plan's token only; the others' grammar masks are computed together by
    llguidance's executor (in Rust, without the GIL) and unpacked in one vectorised pass."""
    import torch
    from llguidance import LLExecutor
    from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask_par

    global _EXECUTOR
    out = torch.zeros((len(rows), vocab), dtype=torch.bool)
    free = []
    for i, (row, n) in enumerate(zip(rows, generated, strict=True)):
        token = row.forced_token(n)
        if token is None:
            free.append(i)
        else:
            out[i, token] = True
    if free:
        if _EXECUTOR is None:
            _EXECUTOR = LLExecutor()
        words = allocate_token_bitmask(len(free), vocab)
        fill_next_token_bitmask_par(_EXECUTOR, [(rows[i].matcher, j) for j, i in enumerate(free)], words)
        out[free] = _unpack(words, vocab)
        for i in free:  # a state that could end here: check its few continuations against the budget
            if rows[i].matcher.is_accepting() and 1 < int(out[i].sum()) <= _FEW:
                rows[i].safe_continuations(out[i], generated[i])
    return out
