"""The JWT verifier: what it accepts, and every forgery and mistake it must refuse."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bazaar.shared.auth import InvalidToken, TokenVerifier, VerifierSettings
from bazaar.shared.problem import Unauthorized
from bazaar.shared.testing.tokens import (
    JwksServer,
    TokenIssuer,
    b64url,
    compact,
    tamper,
)


@pytest.fixture
async def verifier(verifier_settings: VerifierSettings) -> AsyncIterator[TokenVerifier]:
    verifier = TokenVerifier(verifier_settings)
    yield verifier
    await verifier.aclose()


async def rejection(verifier: TokenVerifier, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    return caught.value


# --- what is accepted ---------------------------------------------------------------------


async def test_a_valid_rs256_token_gives_the_subject_scopes_and_client_id(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue("user-42", ["catalog:read", "orders:write"], client_id="web")

    principal = await verifier.verify(token)

    assert principal.subject == "user-42"
    assert principal.scopes == {"catalog:read", "orders:write"}
    assert principal.client_id == "web"
    assert principal.token == token
    assert principal.claims["iss"] == TokenIssuer.ISSUER


async def test_a_valid_es256_token_verifies(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue("service-orders", ["catalog:reserve"], key="ec", client_id="orders")

    principal = await verifier.verify(token)

    assert principal.subject == "service-orders"
    assert principal.has_scopes("catalog:reserve")
    assert principal.client_id == "orders"


async def test_a_token_without_a_scope_claim_has_no_scopes(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    principal = await verifier.verify(token_issuer.issue(claims={"scope": None}))

    assert principal.scopes == frozenset()
    assert not principal.has_scopes("catalog:read")


async def test_a_token_expired_within_the_leeway_is_accepted(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue(claims={"exp": int(time.time()) - 5})

    assert (await verifier.verify(token)).subject == "user-1"


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
async def test_the_token_type_is_compared_case_insensitively_with_an_optional_prefix(
    verifier: TokenVerifier, token_issuer: TokenIssuer, typ: str
) -> None:
    assert (await verifier.verify(token_issuer.issue(headers={"typ": typ}))).subject == "user-1"


def test_the_principal_repr_does_not_show_the_token(token_issuer: TokenIssuer) -> None:
    from bazaar.shared.auth import Principal

    principal = Principal("user-1", frozenset(), None, token="secret.token.value", claims={})

    assert "secret.token.value" not in repr(principal)


# --- algorithm confusion ------------------------------------------------------------------


async def test_a_token_with_alg_none_is_rejected_before_any_key_is_fetched(
    verifier: TokenVerifier, token_issuer: TokenIssuer, jwks_server: JwksServer
) -> None:
    before = jwks_server.hits

    error = await rejection(verifier, token_issuer.unsigned())

    assert error.detail == "The token's algorithm is not allowed."
    assert jwks_server.hits == before


async def test_a_token_signed_with_hs256_using_the_public_key_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer, jwks_server: JwksServer
) -> None:
    before = jwks_server.hits

    error = await rejection(verifier, token_issuer.hmac_with_public_key())

    assert error.detail == "The token's algorithm is not allowed."
    assert jwks_server.hits == before


async def test_an_es256_header_on_an_rsa_key_id_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue(key="ec", headers={"kid": token_issuer.rsa_key.kid})

    error = await rejection(verifier, token)

    assert error.detail == "The token's algorithm does not match its key."


@pytest.mark.parametrize("algorithms", [("RS256", "HS256"), ("none",), ()])
def test_settings_refuse_an_allow_list_with_symmetric_or_no_algorithms(
    algorithms: tuple[str, ...],
) -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        VerifierSettings(jwks_url="http://x", issuer="http://x", algorithms=algorithms)


# --- keys named by the token itself -------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"x5c": ["MIIBszCCAVmgAwIBAgIUQk"]},
    ],
)
async def test_a_token_whose_header_points_at_its_own_key_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer, headers: dict[str, Any]
) -> None:
    error = await rejection(verifier, token_issuer.issue(headers=headers))

    assert error.detail == "The token's header is not acceptable."


async def test_a_token_demanding_a_critical_extension_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    await rejection(verifier, token_issuer.issue(headers={"crit": ["exp"], "exp": 1}))


async def test_a_token_carrying_an_embedded_jwk_signed_by_that_jwk_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer, jwks_server: JwksServer
) -> None:
    # The classic forgery: sign with your own key and ship its public half in `jwk`.
    before = jwks_server.hits
    token = token_issuer.by_stranger(headers={"jwk": token_issuer.stranger.public_jwk()})

    error = await rejection(verifier, token)

    assert error.detail == "The token's header is not acceptable."
    assert jwks_server.hits == before


# --- signature ----------------------------------------------------------------------------


async def test_a_tampered_payload_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    token = tamper(token_issuer.issue(scopes=["catalog:read"]), scope="users:admin")

    error = await rejection(verifier, token)

    assert error.detail == "The token's signature is invalid."


async def test_a_token_signed_by_a_different_key_under_a_known_kid_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    error = await rejection(verifier, token_issuer.by_stranger(kid="test-rsa-1"))

    assert error.detail == "The token's signature is invalid."


async def test_a_token_without_a_key_id_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    error = await rejection(verifier, token_issuer.issue(headers={"kid": None}))

    assert error.detail == "The token has no key id."


# --- claims -------------------------------------------------------------------------------


async def test_an_expired_token_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    error = await rejection(verifier, token_issuer.issue(claims={"exp": int(time.time()) - 60}))

    assert error.detail == "The token has expired."


async def test_a_token_not_valid_until_beyond_the_leeway_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    error = await rejection(verifier, token_issuer.issue(claims={"nbf": int(time.time()) + 60}))

    assert error.detail == "The token is not valid yet."


async def test_a_token_from_another_issuer_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    error = await rejection(verifier, token_issuer.issue(claims={"iss": "https://evil.example"}))

    assert error.detail == "The token's issuer is not trusted."


async def test_a_token_for_another_audience_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    error = await rejection(verifier, token_issuer.issue(claims={"aud": "someone-else"}))

    assert error.detail == "The token is not meant for this audience."


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt+extra", "refresh+jwt"])
async def test_a_token_whose_type_is_not_at_jwt_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer, typ: str | None
) -> None:
    error = await rejection(verifier, token_issuer.issue(headers={"typ": typ}))

    assert error.detail == "The token is not an access token."


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "iss", "aud", "sub"])
async def test_a_token_missing_a_required_claim_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer, claim: str
) -> None:
    error = await rejection(verifier, token_issuer.issue(claims={claim: None}))

    assert error.detail == "The token lacks a required claim."


@pytest.mark.parametrize(
    "claims", [{"scope": ["catalog:read"]}, {"client_id": 7}, {"sub": ""}, {"sub": 42}]
)
async def test_a_token_with_malformed_identity_claims_is_rejected(
    verifier: TokenVerifier, token_issuer: TokenIssuer, claims: dict[str, Any]
) -> None:
    await rejection(verifier, token_issuer.issue(claims=claims))


# --- garbage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "...",
        "é.é.é",
        "\ud800.x.y",
        "x" * 10_000,
        compact({"alg": "RS256"}, {}).replace(".", "!", 1),
        b64url(b"[1,2]") + ".e30.",
        b64url(b'{"alg":"RS256","typ":"at+jwt","kid":"test-rsa-1"}') + ".bm90IGpzb24.c2ln",
    ],
)
async def test_garbage_is_rejected(verifier: TokenVerifier, token: str) -> None:
    error = await rejection(verifier, token)

    assert isinstance(error, Unauthorized)


async def test_a_rejection_says_invalid_token_and_never_echoes_the_token(
    verifier: TokenVerifier, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue(claims={"exp": int(time.time()) - 60})

    error = await rejection(verifier, token)

    assert error.status == 401
    assert error.slug == "unauthorized"
    challenge = error.headers["WWW-Authenticate"]
    assert challenge == 'Bearer error="invalid_token", error_description="The token has expired."'
    assert token not in str(error)
    assert error.__cause__ is None


# --- the cache of verified tokens ---------------------------------------------------------


async def test_a_cached_token_is_answered_without_verifying_again_and_only_until_it_expires(
    verifier_settings: VerifierSettings, token_issuer: TokenIssuer, monkeypatch: Any
) -> None:
    verifier = TokenVerifier(verifier_settings, cache_size=10, cache_seconds=60)
    try:
        token = token_issuer.issue("user-7", ["orders:read"], expires_in=30)
        first = await verifier.verify(token)
        decoded: list[str] = []
        original = verifier._decode

        def counting(*args: Any) -> dict[str, Any]:
            decoded.append("decode")
            return original(*args)

        monkeypatch.setattr(verifier, "_decode", counting)
        assert await verifier.verify(token) is first
        assert decoded == []

        # Past its expiry the cached answer is not used: the token is checked again in full
        # (PyJWT reads its own clock, so here that check still passes).
        later = time.time() + 31
        monkeypatch.setattr(time, "time", lambda: later)
        await verifier.verify(token)
        assert decoded == ["decode"]
    finally:
        await verifier.aclose()


async def test_a_forged_token_is_never_served_from_the_cache(
    verifier_settings: VerifierSettings, token_issuer: TokenIssuer
) -> None:
    verifier = TokenVerifier(verifier_settings, cache_size=10)
    try:
        token = token_issuer.issue("user-8", ["orders:read"])
        await verifier.verify(token)
        for forged in (tamper(token, sub="admin"), token_issuer.by_stranger("user-8")):
            with pytest.raises(InvalidToken):
                await verifier.verify(forged)
    finally:
        await verifier.aclose()


async def test_the_cache_keeps_at_most_its_size_dropping_the_least_recently_used(
    verifier_settings: VerifierSettings, token_issuer: TokenIssuer
) -> None:
    verifier = TokenVerifier(verifier_settings, cache_size=2)
    try:
        tokens = [token_issuer.issue(f"user-{i}") for i in range(3)]
        for token in tokens:
            await verifier.verify(token)
        assert list(verifier._verified) == tokens[1:]
    finally:
        await verifier.aclose()
