"""Bearer tokens at the edge: the shared verifier's rules, and a cache of verified tokens."""

from __future__ import annotations

import time
from collections import OrderedDict

from bazaar.gateway.errors import Forbidden, Unauthorized
from bazaar.shared.auth import Principal, TokenVerifier

MISSING_CHALLENGE = "Bearer"


class Authenticator:
    """Verifies bearer tokens, remembering each verified one until it expires."""

    def __init__(self, verifier: TokenVerifier, *, cache_size: int) -> None:
        self._verifier = verifier
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._size = cache_size

    async def principal(self, authorization: str | None) -> Principal | None:
        """The verified caller, None without a token; InvalidToken (401) when it is bad."""
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "Authentication is required.", headers={"WWW-Authenticate": MISSING_CHALLENGE}
            )
        token = token.strip()
        cached = self._cache.get(token)
        # The cache holds only what passed every check; the expiry is re-checked each time.
        if cached is not None and cached[1] > time.time():
            self._cache.move_to_end(token)
            return cached[0]
        principal = await self._verifier.verify(token)  # InvalidToken is the shared 401
        if self._size:
            self._cache[token] = (principal, float(principal.claims["exp"]))
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return principal


def require(principal: Principal | None, scope: str | None) -> None:
    """Refuse a protected route without a token (401) or without its scope (403)."""
    if principal is None:
        raise Unauthorized(
            "Authentication is required.", headers={"WWW-Authenticate": MISSING_CHALLENGE}
        )
    if scope is not None and not principal.has_scopes(scope):
        raise Forbidden(
            f"This route needs the scope '{scope}'.",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )
