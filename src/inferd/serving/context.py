"""What the serving layer knows about the request it serves."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from inferd.accounts.tokens import TokenInfo


@dataclass(slots=True)
class RequestContext:
    request_id: str
    token: TokenInfo | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def token_id(self) -> str | None:
        return self.token.token_id if self.token else None

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)
