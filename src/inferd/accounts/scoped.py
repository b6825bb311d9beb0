"""Scoped tokens: ``jwt:`` + a JWT (HS256, PyJWT) a token's owner makes from one of its account's
tokens (DeepInfra's ``POST /v1/scoped-jwt``), narrowed to some models, an expiry and a
spending limit.

The JWT carries its parent token's id (``sub``), account (``acc``), ``models``, ``exp``, the
limit in nano-dollars (``spend``) and an id of its own (``jti``, on every usage row it makes).
A scoped token works while its parent does: revoking the parent (or disabling the account)
ends it. It is signed with a key kept in the database (``signing_keys``, made on first start,
named by ``kid`` in the JWT's header), so every process sharing the database verifies the
tokens every other made; ``scoped_token_secret`` in the settings replaces it.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime

import jwt
from sqlalchemy import select

from inferd.accounts.db import Database
from inferd.accounts.models import ApiToken, SigningKey, utcnow
from inferd.accounts.tokens import Scope, TokenInfo, TokenStore
from inferd.errors import Unauthorized

JWT_PREFIX = "jwt:"
ISSUER = "inferd"
_SETTINGS_KID = "settings"
_DECODED = 4096  # decoded tokens remembered (their signature checked once)


class ScopedTokens:
    def __init__(self, db: Database, tokens: TokenStore, secret: str | None = None):
        self._db = db
        self._tokens = tokens
        self._keys: dict[str, str] = {_SETTINGS_KID: secret} if secret else {}
        self._signing_kid: str | None = _SETTINGS_KID if secret else None
        self._decoded: OrderedDict[str, dict] = OrderedDict()

    async def start(self) -> None:
        """Load the signing key (make it on the first start of a database)."""
        if self._signing_kid is not None:
            return
        async with self._db.sessions.begin() as session:
            if await session.scalar(select(SigningKey.id).limit(1)) is None:
                session.add(SigningKey(kid=secrets.token_hex(8), secret=secrets.token_urlsafe(48),
                                       created_at=utcnow()))
        async with self._db.sessions() as session:  # the oldest key signs: every process picks the same
            key = await session.scalar(select(SigningKey).order_by(SigningKey.id).limit(1))
        self._keys[key.kid] = key.secret
        self._signing_kid = key.kid

    def mint(self, parent: ApiToken, *, models: list[str] | None, expires_at: datetime,
             spending_limit_nano_usd: int | None) -> tuple[str, str]:
        """(the scoped token, its scope id)."""
        if self._signing_kid is None:
            raise RuntimeError("ScopedTokens.start() was not awaited")
        scope_id = "sc_" + secrets.token_hex(8)
        claims = {"iss": ISSUER, "sub": parent.token_id, "acc": parent.account_id, "jti": scope_id,
                  "iat": int(utcnow().timestamp()), "exp": int(expires_at.timestamp())}
        if models is not None:
            claims["models"] = models
        if spending_limit_nano_usd is not None:
            claims["spend"] = spending_limit_nano_usd
        token = jwt.encode(claims, self._keys[self._signing_kid], algorithm="HS256",
                           headers={"kid": self._signing_kid})
        return JWT_PREFIX + token, scope_id

    async def claims(self, presented: str) -> dict:
        """The claims of a scoped token whose signature holds; 401 otherwise, or once it expired."""
        claims = self._decoded.get(presented)
        if claims is None:
            claims = await self._decode(presented)
            self._decoded[presented] = claims
            if len(self._decoded) > _DECODED:
                self._decoded.popitem(last=False)
        if claims["exp"] <= utcnow().timestamp():
            raise Unauthorized("This scoped token has expired")
        return claims

    async def _decode(self, presented: str) -> dict:
        raw = presented[len(JWT_PREFIX):]
        try:
            kid = jwt.get_unverified_header(raw).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None and isinstance(kid, str) and len(kid) <= 32:
                key = await self._load_key(kid)
            if key is None:
                raise Unauthorized("Invalid API token")
            claims = jwt.decode(raw, key, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["exp", "sub", "acc", "jti"], "verify_exp": False})
        except jwt.PyJWTError:
            raise Unauthorized("Invalid API token") from None
        if not all(isinstance(claims.get(k), str) for k in ("sub", "acc", "jti")) or \
                not isinstance(claims.get("models", []), list) or not isinstance(claims.get("spend", 0), int):
            raise Unauthorized("Invalid API token")
        return claims

    async def _load_key(self, kid: str) -> str | None:
        """A key another process made (two first starts at once each make one: both verify)."""
        async with self._db.sessions() as session:
            secret = await session.scalar(select(SigningKey.secret).where(SigningKey.kid == kid))
        if secret is not None:
            self._keys[kid] = secret
        return secret

    async def verify(self, presented: str) -> TokenInfo | None:
        """The parent token's rights, narrowed by the scope; None when the parent is gone."""
        claims = await self.claims(presented)
        parent = await self._tokens.verify_id(claims["sub"])
        if parent is None or parent.account_id != claims["acc"]:
            return None
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        if parent.expires_at is not None:
            expires = min(expires, parent.expires_at)
        models = claims.get("models")
        scope = Scope(scope_id=claims["jti"], models=None if models is None else frozenset(map(str, models)),
                      spending_limit_nano_usd=claims.get("spend"))
        return replace(parent, scope=scope, expires_at=expires)
