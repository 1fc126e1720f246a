"""JWT access-token verification shared by the gateway and every service."""

from bazaar.shared.auth.dependency import (
    Caller,
    authenticated,
    bearer_scheme,
    require_any_scope,
    require_scopes,
)
from bazaar.shared.auth.jwks import JwksCache, parse_jwks
from bazaar.shared.auth.principal import Principal
from bazaar.shared.auth.verifier import InvalidToken, TokenVerifier, VerifierSettings

__all__ = [
    "Caller",
    "InvalidToken",
    "JwksCache",
    "Principal",
    "TokenVerifier",
    "VerifierSettings",
    "authenticated",
    "bearer_scheme",
    "parse_jwks",
    "require_any_scope",
    "require_scopes",
]
