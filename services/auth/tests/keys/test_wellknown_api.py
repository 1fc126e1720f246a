"""The discovery routes, and the rotation drill through the shared verifier."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import jwt
import pytest

from bazaar.auth.adapters.keyring import KeyRing
from bazaar.auth.config import AuthSettings
from bazaar.auth.domain.scopes import ALL_SCOPES
from bazaar.shared.auth import InvalidToken, TokenVerifier, VerifierSettings
from bazaar.shared.openapi import install_openapi

from .conftest import (
    ACTIVATION_DELAY,
    AUTH_BASE_URL,
    CACHE_SECONDS,
    ISSUER,
    LEEWAY_SECONDS,
    TOKEN_TTL,
    Clock,
    access_claims,
    discovery_app,
)

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}
JWKS = "/.well-known/jwks.json"
METADATA = "/.well-known/openid-configuration"


async def published_kids(client: httpx.AsyncClient) -> list[str]:
    response = await client.get(JWKS)
    assert response.status_code == 200, response.text
    return [key["kid"] for key in response.json()["keys"]]


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_the_rotation_drill_keeps_every_token_verifying(
    keyring: KeyRing,
    discovery_client: httpx.AsyncClient,
    verifier: TokenVerifier,
    keys_settings: AuthSettings,
    clock: Clock,
) -> None:
    await keyring.ensure_key()
    before = await keyring.sign(access_claims(keys_settings, "before"))
    old_kid = kid_of(before)
    assert (await verifier.verify(before)).subject == "before"

    # Rotation: the new key is published at once, but the old one goes on signing.
    new_kid = await keyring.rotate(ACTIVATION_DELAY)
    assert await published_kids(discovery_client) == [old_kid, new_kid]
    during = await keyring.sign(access_claims(keys_settings, "during"))
    assert kid_of(during) == old_kid
    assert (await verifier.verify(before)).subject == "before"
    assert (await verifier.verify(during)).subject == "during"

    # Activation: new tokens carry the new kid; the old key's tokens still verify.
    clock.advance(ACTIVATION_DELAY)
    after = await keyring.sign(access_claims(keys_settings, "after"))
    assert kid_of(after) == new_kid
    assert (await verifier.verify(after)).subject == "after"
    assert (await verifier.verify(before)).subject == "before"
    assert (await verifier.verify(during)).subject == "during"
    assert await published_kids(discovery_client) == [old_kid, new_kid]

    # The old key stays published until its last token has expired, then leaves.
    grace = TOKEN_TTL + timedelta(seconds=LEEWAY_SECONDS + CACHE_SECONDS)
    clock.advance(grace - timedelta(seconds=1))
    assert await published_kids(discovery_client) == [old_kid, new_kid]
    clock.advance(timedelta(seconds=1))
    assert await published_kids(discovery_client) == [new_kid]


async def test_tokens_of_a_key_that_left_the_jwks_are_rejected(
    keyring: KeyRing, keys_settings: AuthSettings, clock: Clock
) -> None:
    await keyring.ensure_key()
    old_token = await keyring.sign(access_claims(keys_settings))
    await keyring.rotate(timedelta(0))
    clock.advance(timedelta(days=1))
    transport = httpx.ASGITransport(app=discovery_app(keyring, keys_settings))
    async with httpx.AsyncClient(transport=transport, base_url=AUTH_BASE_URL) as client:
        settings = VerifierSettings(jwks_url=f"{AUTH_BASE_URL}{JWKS}", issuer=ISSUER)
        fresh = TokenVerifier(settings, client=client)
        try:
            with pytest.raises(InvalidToken):
                await fresh.verify(old_token)
        finally:
            await fresh.aclose()


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_either_algorithm_signs_tokens_the_shared_verifier_accepts(
    alg: str,
    make_settings: Callable[..., AuthSettings],
    make_keyring: Callable[..., KeyRing],
) -> None:
    settings = make_settings(signing_alg=alg)
    ring = make_keyring(settings)
    await ring.ensure_key()
    token = await ring.sign(access_claims(settings, "user-7"))
    assert jwt.get_unverified_header(token)["alg"] == alg
    transport = httpx.ASGITransport(app=discovery_app(ring, settings))
    async with httpx.AsyncClient(transport=transport, base_url=AUTH_BASE_URL) as client:
        verifier_settings = VerifierSettings(jwks_url=f"{AUTH_BASE_URL}{JWKS}", issuer=ISSUER)
        verifier = TokenVerifier(verifier_settings, client=client)
        try:
            principal = await verifier.verify(token)
        finally:
            await verifier.aclose()
    assert principal.subject == "user-7"
    assert principal.scopes == {"catalog:read", "orders:read"}


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_the_jwks_shows_public_keys_only(
    alg: str,
    make_settings: Callable[..., AuthSettings],
    make_keyring: Callable[..., KeyRing],
) -> None:
    settings = make_settings(signing_alg=alg)
    ring = make_keyring(settings)
    await ring.ensure_key()
    await ring.rotate(ACTIVATION_DELAY)
    transport = httpx.ASGITransport(app=discovery_app(ring, settings))
    async with httpx.AsyncClient(transport=transport, base_url=AUTH_BASE_URL) as client:
        response = await client.get(JWKS)
    keys = response.json()["keys"]
    assert len(keys) == 2
    for key in keys:
        assert not PRIVATE_MEMBERS & set(key), key
        assert key["use"] == "sig" and key["alg"] == alg and key["kid"]
        expected = {"kty", "kid", "alg", "use"} | (
            {"crv", "x", "y"} if alg == "ES256" else {"n", "e"}
        )
        assert set(key) == expected
    assert "PRIVATE" not in response.text


async def test_the_jwks_is_json_cacheable_for_the_configured_max_age(
    keyring: KeyRing, discovery_client: httpx.AsyncClient, keys_settings: AuthSettings
) -> None:
    await keyring.ensure_key()
    response = await discovery_client.get(JWKS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == (
        f"public, max-age={keys_settings.jwks_max_age_seconds}"
    )


async def test_the_openid_configuration_names_the_endpoints_grants_and_scopes(
    discovery_client: httpx.AsyncClient, keys_settings: AuthSettings
) -> None:
    response = await discovery_client.get(METADATA)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"].startswith("public, max-age=")
    assert response.json() == {
        "issuer": ISSUER,
        "jwks_uri": f"{ISSUER}/.well-known/jwks.json",
        "token_endpoint": f"{ISSUER}/v1/auth/token",
        "revocation_endpoint": f"{ISSUER}/v1/auth/revoke",
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "scopes_supported": list(ALL_SCOPES),
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        # Revocation is public; no authorization endpoint, so no response types.
        "revocation_endpoint_auth_methods_supported": ["none"],
        "subject_types_supported": ["public"],
    }
    assert set(ALL_SCOPES) == {
        "catalog:read",
        "catalog:write",
        "orders:read",
        "orders:write",
        "orders:admin",
        "users:admin",
        "catalog:reserve",
    }


async def test_the_openapi_document_describes_the_discovery_routes(
    keyring: KeyRing, keys_settings: AuthSettings
) -> None:
    app = discovery_app(keyring, keys_settings)
    install_openapi(app)  # as every service app does: docstrings become summaries
    paths = app.openapi()["paths"]
    jwks = paths[JWKS]["get"]
    assert jwks["summary"] == "Get the public keys that verify access tokens."
    assert jwks["tags"] == ["discovery"]
    assert "JwksRead" in str(jwks["responses"]["200"])
    assert "ServerMetadataRead" in str(paths[METADATA]["get"]["responses"]["200"])
