"""FastAPI dependencies: authenticate the caller and check the route's scopes."""

# No `from __future__ import annotations`: FastAPI evaluates these annotations at runtime,
# and the one inside require_scopes refers to a closure variable.
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bazaar.shared.auth.principal import Principal
from bazaar.shared.auth.verifier import TokenVerifier
from bazaar.shared.problem import Forbidden, Unauthorized

# auto_error=False: this object only reads the header and puts `bearerAuth` into OpenAPI;
# every refusal is ours, as a problem document, never FastAPI's own 403.
bearer_scheme = HTTPBearer(
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description="An access token (`at+jwt`) from `POST /v1/auth/token`.",
    auto_error=False,
)


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> Principal:
    """Verify the request's bearer token and return the caller."""
    # HTTPBearer yields None for a missing header, another scheme or an empty token.
    if credentials is None:
        raise Unauthorized("Authentication is required.", headers={"WWW-Authenticate": "Bearer"})
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify(credentials.credentials)


def require_scopes(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """Build a dependency that authenticates the caller and demands every given scope."""
    wanted = " ".join(scopes)
    challenge = f'Bearer error="insufficient_scope", scope="{wanted}"'

    async def scoped_caller(
        principal: Annotated[Principal, Security(authenticated, scopes=list(scopes))],
    ) -> Principal:
        if not principal.has_scopes(*scopes):
            raise Forbidden(
                f"This requires the scope(s): {wanted}.",
                headers={"WWW-Authenticate": challenge},
            )
        return principal

    return scoped_caller


def require_any_scope(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """Build a dependency that authenticates the caller and demands one of the given scopes."""
    wanted = " ".join(scopes)
    challenge = f'Bearer error="insufficient_scope", scope="{scopes[0]}"'

    async def scoped_caller(
        principal: Annotated[Principal, Security(authenticated, scopes=list(scopes))],
    ) -> Principal:
        if not any(principal.has_scopes(scope) for scope in scopes):
            raise Forbidden(
                f"This requires one of the scopes: {wanted}.",
                headers={"WWW-Authenticate": challenge},
            )
        return principal

    return scoped_caller


#: A route parameter for "any authenticated caller".
Caller = Annotated[Principal, Depends(authenticated)]
