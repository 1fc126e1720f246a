"""An emergency: a compromised key is withdrawn at once and a new one signs immediately."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest

from bazaar.auth.adapters.keyring import KeyRing
from bazaar.auth.config import AuthSettings
from bazaar.shared.auth import InvalidToken, TokenVerifier


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_revoking_the_signing_key_unpublishes_it_and_a_new_key_signs_at_once(
    keyring: KeyRing,
) -> None:
    await keyring.ensure_key()
    leaked_token = await keyring.sign({"sub": "user-1"})
    leaked = kid_of(leaked_token)

    replacement = await keyring.revoke(leaked)

    assert replacement is not None and replacement != leaked
    assert kid_of(await keyring.sign({"sub": "user-1"})) == replacement
    published = [k["kid"] for k in (await keyring.jwks())["keys"]]
    assert published == [replacement]


async def test_a_verifier_with_a_fresh_cache_refuses_tokens_of_a_revoked_key(
    keyring: KeyRing, verifier: TokenVerifier, keys_settings: AuthSettings
) -> None:
    await keyring.ensure_key()
    now = int(time.time())
    claims = {
        "iss": keys_settings.jwt_issuer,
        "aud": keys_settings.jwt_audience,
        "sub": "user-1",
        "exp": now + 900,
        "iat": now,
        "nbf": now,
        "jti": "j-1",
        "scope": "catalog:read",
        "client_id": keys_settings.public_client_id,
    }
    leaked_token = await keyring.sign(claims)
    await keyring.revoke(kid_of(leaked_token))

    with pytest.raises(InvalidToken):
        await verifier.verify(leaked_token)
    assert (await verifier.verify(await keyring.sign(claims))).subject == "user-1"


async def test_revoking_a_retired_key_needs_no_replacement(keyring: KeyRing) -> None:
    await keyring.ensure_key()
    old = kid_of(await keyring.sign({"sub": "u"}))
    new = await keyring.rotate(timedelta(0))

    assert await keyring.revoke(old) is None
    assert [k["kid"] for k in (await keyring.jwks())["keys"]] == [new]


async def test_revoking_an_unknown_key_says_so(keyring: KeyRing) -> None:
    await keyring.ensure_key()
    with pytest.raises(KeyError):
        await keyring.revoke("no-such-kid")
