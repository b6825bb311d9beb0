"""A LoRA adapter served as a model of its own: its requests run on the base model's engine,
with the adapter, in the same batches as the base model's requests (vLLM batches requests of
different adapters together: ``max_loras`` of them in one step).

The base engine is looked up by its key on each call, so the adapter follows its base through
restarts, stops and starts; while the base cannot serve, neither can the adapter (same 503).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from inferd.catalog import ModelRef
from inferd.engine.base import Engine, EngineState
from inferd.engine.generation import Adapter, GenerationEngine, GenerationRequest, SequenceDelta
from inferd.errors import ModelUnavailable


class AdapterEngine(GenerationEngine):
    def __init__(self, ref: ModelRef, adapter: Adapter, base_key: str, find: Callable[[str], Engine | None]):
        super().__init__(ref)
        self.adapter = adapter
        self.base_key = base_key
        self._find = find

    @property
    def base(self) -> GenerationEngine:
        engine = self._find(self.base_key)
        if not isinstance(engine, GenerationEngine):
            raise ModelUnavailable(f"adapter {self.name}: its base model {self.base_key} is not served")
        return engine

    # the base's state is the adapter's (``Engine.__init__`` sets one: ignored)
    @property
    def state(self) -> EngineState:  # type: ignore[override]
        engine = self._find(self.base_key)
        return engine.state if engine is not None else EngineState.FAILED

    @state.setter
    def state(self, _: EngineState) -> None:
        pass

    @property
    def error(self) -> str | None:  # type: ignore[override]
        engine = self._find(self.base_key)
        if engine is None:
            return f"its base model {self.base_key} is not served"
        return f"base model {self.base_key}: {engine.error}" if engine.error else None

    @error.setter
    def error(self, _: str | None) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        # tokenizer, context_length, eos_token_ids, grammars... are the base model's
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)

    async def start(self) -> None:
        pass  # the base model loads; the adapter was loaded into it when it was made

    async def stop(self) -> None:
        pass

    def generate(self, request: GenerationRequest) -> AsyncIterator[SequenceDelta]:
        return self.base.generate(replace(request, adapter=self.adapter))

    async def abort(self, request_id: str) -> None:
        await self.base.abort(request_id)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "base": self.base_key, "adapter": self.adapter.name}
