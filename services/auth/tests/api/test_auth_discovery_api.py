"""The discovery rows of the Auth table, served by the whole app: JWKS and server metadata."""

from __future__ import annotations

from typing import Any

import httpx
import jwt

from bazaar.auth.config import AuthSettings

from .conftest import Account

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


async def test_the_jwks_publishes_the_signing_key_public_half_only_and_may_be_cached(
    customer: Account, client: httpx.AsyncClient, auth_settings: AuthSettings
) -> None:
    response = await client.get("/.well-known/jwks.json")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert f"max-age={auth_settings.jwks_max_age_seconds}" in response.headers["cache-control"]
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert {"kid", "alg", "kty"} <= set(key)
        assert key["use"] == "sig"
        assert key["alg"] in {"ES256", "RS256"}
        assert not PRIVATE_MEMBERS & set(key)
    kid = jwt.get_unverified_header(customer.tokens["access_token"])["kid"]
    assert kid in {key["kid"] for key in keys}


async def test_the_server_metadata_names_issuer_endpoints_grants_and_scopes(
    client: httpx.AsyncClient, auth_settings: AuthSettings
) -> None:
    response = await client.get("/.well-known/openid-configuration")

    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    issuer = auth_settings.jwt_issuer
    assert body["issuer"] == issuer
    assert body["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert body["token_endpoint"] == f"{issuer}/v1/auth/token"
    assert body["revocation_endpoint"] == f"{issuer}/v1/auth/revoke"
    assert set(body["grant_types_supported"]) == {
        "password",
        "refresh_token",
        "client_credentials",
    }
    assert set(body["scopes_supported"]) == {
        "catalog:read",
        "catalog:write",
        "orders:read",
        "orders:write",
        "orders:admin",
        "users:admin",
        "catalog:reserve",
    }
