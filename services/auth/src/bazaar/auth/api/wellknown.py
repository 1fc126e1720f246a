"""Discovery routes: the JWKS and the OpenID/OAuth server metadata."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bazaar.auth.config import AuthSettings
from bazaar.auth.domain.scopes import ALL_SCOPES

router = APIRouter(tags=["discovery"])

GRANT_TYPES = ("password", "refresh_token", "client_credentials")
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")


class JwkRead(BaseModel):
    """A public signing key (RFC 7517); which members it has depends on `kty`."""

    kid: str
    kty: Literal["EC", "RSA"]
    alg: Literal["ES256", "RS256"]
    use: Literal["sig"]
    crv: str | None = Field(default=None, description="EC keys: the curve (P-256)")
    x: str | None = Field(default=None, description="EC keys: the x coordinate")
    y: str | None = Field(default=None, description="EC keys: the y coordinate")
    n: str | None = Field(default=None, description="RSA keys: the modulus")
    e: str | None = Field(default=None, description="RSA keys: the public exponent")


class JwksRead(BaseModel):
    """The published signing keys; during a rotation, the old and the new."""

    keys: list[JwkRead]


class ServerMetadataRead(BaseModel):
    """Where this authorization server's endpoints are and what they support."""

    issuer: str
    jwks_uri: str
    token_endpoint: str
    revocation_endpoint: str
    grant_types_supported: list[str]
    scopes_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    subject_types_supported: list[str]


def _cache_control(settings: AuthSettings) -> dict[str, str]:
    return {"Cache-Control": f"public, max-age={settings.jwks_max_age_seconds}"}


@router.get("/.well-known/jwks.json", response_model=JwksRead)
async def get_jwks(request: Request) -> JSONResponse:
    """Get the public keys that verify access tokens."""
    document = await request.app.state.keyring.jwks()
    return JSONResponse(document, headers=_cache_control(request.app.state.settings))


@router.get("/.well-known/openid-configuration", response_model=ServerMetadataRead)
async def get_openid_configuration(request: Request) -> JSONResponse:
    """Get the server metadata: issuer, endpoints, grants and scopes."""
    settings: AuthSettings = request.app.state.settings
    base = settings.jwt_issuer.rstrip("/")
    metadata = ServerMetadataRead(
        issuer=settings.jwt_issuer,
        jwks_uri=f"{base}/.well-known/jwks.json",
        token_endpoint=f"{base}/v1/auth/token",
        revocation_endpoint=f"{base}/v1/auth/revoke",
        grant_types_supported=list(GRANT_TYPES),
        scopes_supported=list(ALL_SCOPES),
        token_endpoint_auth_methods_supported=list(CLIENT_AUTH_METHODS),
        # Revocation is public (RFC 7009 §2.1 allows it for public clients' tokens).
        revocation_endpoint_auth_methods_supported=["none"],
        subject_types_supported=["public"],
    )
    return JSONResponse(metadata.model_dump(), headers=_cache_control(settings))
