"""Bearer tokens at the edge: the shared verifier's rules and its cache of verified tokens."""

from __future__ import annotations

from bazaar.gateway.errors import Forbidden, Unauthorized
from bazaar.shared.auth import Principal, TokenVerifier

MISSING_CHALLENGE = "Bearer"


class Authenticator:
    """Reads a request's bearer token and verifies it (the verifier remembers verified ones)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def principal(self, authorization: str | None) -> Principal | None:
        """The verified caller, None without a token; InvalidToken (401) when it is bad."""
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "Authentication is required.", headers={"WWW-Authenticate": MISSING_CHALLENGE}
            )
        return await self._verifier.verify(token.strip())  # InvalidToken is the shared 401


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
