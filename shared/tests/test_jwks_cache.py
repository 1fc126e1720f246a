"""The JWKS cache: which keys it keeps, and when it goes back to the auth service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bazaar.shared.auth import InvalidToken, JwksCache, TokenVerifier, VerifierSettings, parse_jwks
from bazaar.shared.testing.tokens import JwksServer, ManualClock, TokenIssuer

ALGORITHMS = ("RS256", "ES256")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def verifier(
    verifier_settings: VerifierSettings, clock: ManualClock
) -> AsyncIterator[TokenVerifier]:
    verifier = TokenVerifier(verifier_settings, clock=clock)
    yield verifier
    await verifier.aclose()


class FakeAuth:
    """An httpx transport answering JWKS requests from a settable response."""

    def __init__(self, respond: Callable[[], httpx.Response]) -> None:
        self.respond = respond
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return self.respond()


@pytest.fixture
async def fake_client(
    token_issuer: TokenIssuer,
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeAuth]]:
    auth = FakeAuth(lambda: httpx.Response(200, json=token_issuer.jwks()))
    async with httpx.AsyncClient(transport=httpx.MockTransport(auth)) as client:
        yield client, auth


# --- which keys are kept ------------------------------------------------------------------


def jwk(token_issuer: TokenIssuer, **changes: Any) -> dict[str, Any]:
    key = {**token_issuer.rsa_key.public_jwk(), **changes}
    return {name: value for name, value in key.items() if value is not None}


def test_keys_for_signatures_are_kept_by_kid(token_issuer: TokenIssuer) -> None:
    keys = parse_jwks(token_issuer.jwks(), ALGORITHMS)

    assert set(keys) == {key.kid for key in token_issuer.keys}
    assert keys["test-ec-1"].algorithm_name == "ES256"


def test_a_key_without_use_is_kept_since_use_is_optional(token_issuer: TokenIssuer) -> None:
    assert set(parse_jwks({"keys": [jwk(token_issuer, use=None, kid="k")]}, ALGORITHMS)) == {"k"}


@pytest.mark.parametrize(
    "changes",
    [
        {"use": "enc"},
        {"kid": None},
        {"kid": 7},
        {"alg": "RS512"},
        {"alg": "HS256"},
        {"kty": "oct", "k": "c2VjcmV0", "alg": None},
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"d": "cHJpdmF0ZQ"},
        {"n": "not base64!"},
    ],
)
def test_keys_that_are_not_usable_public_signing_keys_are_ignored(
    token_issuer: TokenIssuer, changes: dict[str, Any]
) -> None:
    assert parse_jwks({"keys": [jwk(token_issuer, **changes)]}, ALGORITHMS) == {}


def test_an_ec_key_on_a_curve_outside_the_allow_list_is_ignored() -> None:
    p384 = {
        "kty": "EC",
        "crv": "P-384",
        "kid": "p384",
        "x": "iA7lWQLzVrKGEFjfGcfMHfTEUKurgKDsuPpRRc6KHLtgG3fsPeNdw2gUP3L5DWpO",
        "y": "Cyt6mQ2CZjK9mrQC2nQtCz0jZ3vhW2X6Sqyl0J-EPexUA5sEs4bEuIHc6nJmWNMr",
    }

    assert parse_jwks({"keys": [p384]}, ALGORITHMS) == {}


@pytest.mark.parametrize("document", [None, [], "keys", {"keys": {}}, {"keys": ["x", 1]}, {}])
def test_a_document_that_is_not_a_key_set_yields_no_keys(document: Any) -> None:
    assert parse_jwks(document, ALGORITHMS) == {}


# --- when it fetches ----------------------------------------------------------------------


async def test_an_unknown_kid_refetches_once_and_a_second_within_the_interval_does_not(
    verifier: TokenVerifier, token_issuer: TokenIssuer, jwks_server: JwksServer
) -> None:
    await verifier.verify(token_issuer.issue())
    before = jwks_server.hits

    with pytest.raises(InvalidToken, match="signing key is unknown"):
        await verifier.verify(token_issuer.issue(headers={"kid": "nobody-1"}))
    with pytest.raises(InvalidToken, match="signing key is unknown"):
        await verifier.verify(token_issuer.issue(headers={"kid": "nobody-2"}))

    assert jwks_server.hits == before + 1


async def test_an_unknown_kid_may_refetch_again_once_the_interval_has_passed(
    verifier: TokenVerifier,
    token_issuer: TokenIssuer,
    jwks_server: JwksServer,
    clock: ManualClock,
) -> None:
    await verifier.verify(token_issuer.issue())
    with pytest.raises(InvalidToken):
        await verifier.verify(token_issuer.issue(headers={"kid": "nobody-1"}))
    before = jwks_server.hits

    clock.advance(verifier.settings.jwks_min_refetch_seconds)
    with pytest.raises(InvalidToken):
        await verifier.verify(token_issuer.issue(headers={"kid": "nobody-2"}))

    assert jwks_server.hits == before + 1


async def test_after_a_rotation_the_new_kid_is_fetched_once_and_the_old_kid_still_verifies(
    verifier: TokenVerifier, token_issuer: TokenIssuer, jwks_server: JwksServer
) -> None:
    old_token = token_issuer.issue()
    await verifier.verify(old_token)
    before = jwks_server.hits

    new_key = token_issuer.rotate()
    new_token = token_issuer.issue("user-2")

    assert (await verifier.verify(new_token)).subject == "user-2"
    assert (await verifier.verify(old_token)).subject == "user-1"
    assert token_issuer.rsa_key is new_key
    assert jwks_server.hits == before + 1


async def test_keys_are_refetched_when_the_ttl_expires(
    verifier: TokenVerifier,
    token_issuer: TokenIssuer,
    jwks_server: JwksServer,
    clock: ManualClock,
) -> None:
    token = token_issuer.issue()
    await verifier.verify(token)
    before = jwks_server.hits

    clock.advance(verifier.settings.jwks_ttl_seconds - 1)
    await verifier.verify(token)
    assert jwks_server.hits == before

    clock.advance(1)
    await verifier.verify(token)
    await verifier.jwks.refreshed()
    assert jwks_server.hits == before + 1


async def test_when_auth_is_down_the_last_good_keys_keep_serving(
    verifier: TokenVerifier,
    token_issuer: TokenIssuer,
    jwks_server: JwksServer,
    clock: ManualClock,
) -> None:
    token = token_issuer.issue()
    await verifier.verify(token)
    before = jwks_server.hits

    with jwks_server.down():
        clock.advance(verifier.settings.jwks_ttl_seconds + 1)
        assert (await verifier.verify(token)).subject == "user-1"
        await verifier.jwks.refreshed()
        # The failure is remembered: the next request does not knock again at once.
        assert (await verifier.verify(token)).subject == "user-1"
        await verifier.jwks.refreshed()

    assert jwks_server.hits == before + 1


async def test_while_auth_is_down_a_cold_verifier_rejects_and_recovers_later(
    verifier: TokenVerifier,
    token_issuer: TokenIssuer,
    jwks_server: JwksServer,
    clock: ManualClock,
) -> None:
    token = token_issuer.issue()
    with jwks_server.down(), pytest.raises(InvalidToken, match="signing key is unknown"):
        await verifier.verify(token)

    clock.advance(verifier.settings.jwks_min_refetch_seconds)

    assert (await verifier.verify(token)).subject == "user-1"


async def test_concurrent_verifications_on_a_cold_cache_share_one_fetch(
    verifier: TokenVerifier, token_issuer: TokenIssuer, jwks_server: JwksServer
) -> None:
    before = jwks_server.hits

    principals = await asyncio.gather(
        *(verifier.verify(token_issuer.issue(f"user-{n}")) for n in range(20))
    )

    assert [p.subject for p in principals] == [f"user-{n}" for n in range(20)]
    assert jwks_server.hits == before + 1


async def test_concurrent_verifications_with_an_unknown_kid_share_one_fetch(
    verifier: TokenVerifier, token_issuer: TokenIssuer, jwks_server: JwksServer
) -> None:
    await verifier.verify(token_issuer.issue())
    before = jwks_server.hits
    forged = token_issuer.issue(headers={"kid": "nobody-at-all"})

    results = await asyncio.gather(
        *(verifier.verify(forged) for _ in range(20)), return_exceptions=True
    )

    assert all(isinstance(result, InvalidToken) for result in results)
    assert jwks_server.hits == before + 1


# --- the HTTP side ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"keys": []}),
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(302, headers={"Location": "https://attacker.example/jwks.json"}),
        httpx.Response(500),
    ],
    ids=["empty-set", "not-json", "redirect", "server-error"],
)
async def test_a_bad_answer_does_not_replace_the_last_good_keys(
    fake_client: tuple[httpx.AsyncClient, FakeAuth],
    clock: ManualClock,
    response: httpx.Response,
) -> None:
    client, auth = fake_client
    cache = JwksCache("https://auth.test/jwks", client=client, clock=clock, ttl_seconds=60)
    assert await cache.get("test-ec-1") is not None

    auth.respond = lambda: response
    clock.advance(61)

    assert await cache.get("test-ec-1") is not None
    await cache.refreshed()
    assert auth.calls == 2
    assert await cache.get("test-ec-1") is not None


async def test_an_injected_client_is_left_open_and_an_own_client_is_closed(
    fake_client: tuple[httpx.AsyncClient, FakeAuth],
) -> None:
    client, _ = fake_client
    borrowed = JwksCache("https://auth.test/jwks", client=client)
    owned = JwksCache("https://auth.test/jwks")

    await borrowed.aclose()
    await owned.aclose()

    assert not client.is_closed
    assert owned._client.is_closed


async def test_a_hanging_auth_service_does_not_stall_verification_of_a_known_key(
    token_issuer: TokenIssuer, clock: ManualClock
) -> None:
    release = asyncio.Event()
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls > 1:  # the refresh after the TTL hangs until released
            await release.wait()
        return httpx.Response(200, json=token_issuer.jwks())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        cache = JwksCache("https://auth.test/jwks", client=client, clock=clock, ttl_seconds=60)
        assert await cache.get("test-rsa-1") is not None
        clock.advance(61)
        # Answered from the cache while the refresh hangs in the background.
        async with asyncio.timeout(1):
            results = await asyncio.gather(*(cache.get("test-rsa-1") for _ in range(50)))
        assert all(key is not None for key in results)
        assert calls == 2, "one background refresh, not one per request"
        release.set()
        await cache.refreshed()
        await cache.aclose()
