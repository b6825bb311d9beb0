"""What the serving layer knows about the request it serves."""

from __future__ import annotations

import base64
import os
import random
import time
from dataclasses import dataclass, field

from inferd.accounts.tokens import TokenInfo
from inferd.catalog import EVERYONE, Viewer


# Request ids need to be unique, not secret: a PRNG seeded from the OS is ~100x cheaper
# per request than os.urandom, which is slow on some virtual machines.
_ids = random.Random(os.urandom(16))


def new_request_id() -> str:
    return base64.urlsafe_b64encode(_ids.getrandbits(144).to_bytes(18, "big")).decode()


@dataclass(slots=True)
class RequestContext:
    """``request_id`` is the server's own, unique, and the key of everything the request leaves
    (engine requests, usage rows); ``client_request_id`` is the client's ``X-Request-ID``, a label
    that is echoed, logged and stored, never a key (clients reuse theirs on retries)."""

    request_id: str
    client_request_id: str | None = None
    token: TokenInfo | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def token_id(self) -> str | None:
        return self.token.token_id if self.token else None

    @property
    def account_id(self) -> str | None:
        return self.token.account_id if self.token else None

    @property
    def viewer(self) -> Viewer:
        """Which models this request may see: with authentication off every caller acts as the admin."""
        if self.token is None:
            return EVERYONE
        return Viewer(self.token.account_id, self.token.is_admin)

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)
