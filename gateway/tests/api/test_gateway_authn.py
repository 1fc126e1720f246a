"""Authentication at the edge (API.md "Authentication"): the JWT negative suite through the
gateway, identity headers, and the JWKS cache (one refetch per unknown kid, outages)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from aiohttp import web

from bazaar.gateway.config import GatewaySettings
from bazaar.shared.auth.verifier import VerifierSettings
from bazaar.shared.testing.tokens import JWKS_PATH, JwksServer, TokenIssuer, compact, tamper

INVALID_TOKEN = 'Bearer error="invalid_token"'


@pytest.fixture
async def protected(fakes, gateways):
    """A gateway in front of an echo orders upstream (every orders route needs a token)."""
    orders = await fakes.upstream("orders")
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"orders": orders, "catalog": catalog})
    return client, orders, catalog


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _forged(issuer: TokenIssuer) -> dict[str, Callable[[], str]]:
    now = int(time.time())
    return {
        "alg-none": issuer.unsigned,
        "alg-none-no-signature-dot": lambda: issuer.unsigned().rstrip("."),
        "hs256-with-the-public-key": issuer.hmac_with_public_key,
        "expired": lambda: issuer.issue(expires_in=-3600),
        "not-yet-valid": lambda: issuer.issue(claims={"nbf": now + 3600}),
        "issued-in-the-future-and-not-yet-valid": lambda: issuer.issue(
            claims={"iat": now + 3600, "nbf": now + 3600}
        ),
        "wrong-iss": lambda: issuer.issue(claims={"iss": "https://evil.example"}),
        "wrong-aud": lambda: issuer.issue(claims={"aud": "someone-else"}),
        "wrong-typ": lambda: issuer.issue(headers={"typ": "JWT"}),
        "no-typ": lambda: issuer.issue(headers={"typ": None}),
        "id-token-typ": lambda: issuer.issue(headers={"typ": "id_token+jwt"}),
        "tampered-payload": lambda: tamper(
            issuer.issue(scopes=("catalog:read",)), sub="admin", scope="orders:admin"
        ),
        "unknown-kid": lambda: issuer.issue(headers={"kid": "nobody-knows-this-kid"}),
        "no-kid": lambda: issuer.issue(headers={"kid": None}),
        "jku-header": lambda: issuer.issue(headers={"jku": "http://127.0.0.1:9/jwks.json"}),
        "jwk-header": lambda: issuer.issue(headers={"jwk": issuer.stranger.public_jwk()}),
        "x5u-header": lambda: issuer.issue(headers={"x5u": "http://127.0.0.1:9/cert.pem"}),
        "x5c-header": lambda: issuer.issue(headers={"x5c": ["MIIB"]}),
        "crit-header": lambda: issuer.issue(headers={"crit": ["exp"]}),
        "a-strangers-key-under-a-published-kid": issuer.by_stranger,
        "a-strangers-key-under-its-own-kid": lambda: issuer.by_stranger(kid="stranger-1"),
        "rs256-claimed-for-the-ec-key": lambda: compact(
            {"alg": "RS256", "typ": "at+jwt", "kid": issuer.ec_key.kid}, issuer.claims(), b"sig"
        ),
        "missing-exp": lambda: issuer.issue(claims={"exp": None}),
        "missing-sub": lambda: issuer.issue(claims={"sub": None}),
        "missing-iss": lambda: issuer.issue(claims={"iss": None}),
        "empty-signature": lambda: issuer.issue().rsplit(".", 1)[0] + ".",
        "signature-of-another-token": lambda: (
            issuer.issue("alice").rsplit(".", 1)[0]
            + "."
            + issuer.issue("mallory").rsplit(".", 1)[1]
        ),
        "two-segments": lambda: ".".join(issuer.issue().split(".")[:2]),
        "garbage": lambda: "not-a-jwt",
    }


# Only the names are needed here: an issuer without keys is enough to list them.
FORGERIES = list(_forged(TokenIssuer.__new__(TokenIssuer)))


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_an_invalid_token_is_a_401_invalid_token_and_never_reaches_the_upstream(
    protected, token_issuer: TokenIssuer, expect, forgery: str
) -> None:
    client, orders, _ = protected
    token = _forged(token_issuer)[forgery]()
    response = await client.get("/v1/orders", headers=_bearer(token))
    await expect.problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith(INVALID_TOKEN)
    assert orders.hits == 0


@pytest.mark.parametrize(
    "authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc", "Digest x=y"]
)
async def test_an_authorization_without_a_bearer_token_is_a_401_asking_for_one(
    protected, expect, authorization: str
) -> None:
    client, orders, _ = protected
    response = await client.get("/v1/orders", headers={"Authorization": authorization})
    await expect.problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert orders.hits == 0


async def test_a_missing_token_on_a_protected_route_is_a_401_with_a_plain_bearer_challenge(
    protected, expect
) -> None:
    client, orders, _ = protected
    response = await client.get("/v1/orders")
    await expect.problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert orders.hits == 0


@pytest.mark.parametrize("key", ["rsa", "ec"])
async def test_a_valid_token_is_forwarded_as_is_in_authorization(
    protected, token_issuer: TokenIssuer, expect, key: str
) -> None:
    client, _, _ = protected
    token = token_issuer.issue("alice", key=key)  # type: ignore[arg-type]
    response = await client.get("/v1/orders", headers=_bearer(token))
    payload = await expect.echo(response)
    assert expect.headers(payload).getall("Authorization") == [f"Bearer {token}"]


IDENTITY_HEADERS = {
    "X-User-Id": "admin",
    "X-User": "admin",
    "X-User-Email": "admin@bazaar.test",
    "X-User-Roles": "admin",
    "X-User-Scopes": "users:admin",
    "X-Authenticated-User": "admin",
    "X-Authenticated-Userid": "admin",
    "X-Forwarded-User": "admin",
    "X-Forwarded-Email": "admin@bazaar.test",
    "X-Principal": "admin",
    "X-Client-Id": "orders",
    "X-Scopes": "orders:admin",
    "X-Remote-User": "admin",
    "X-Consumer-Id": "admin",
    "X-Consumer-Username": "admin",
    "X-Auth-Foo": "admin",
    "X-Auth-Request-User": "admin",
    "X-Bazaar-Foo": "admin",
    "X-Bazaar-Subject": "admin",
}


@pytest.mark.parametrize("route", ["protected", "public"])
async def test_identity_headers_a_client_sends_are_stripped_before_the_upstream(
    protected, token_issuer: TokenIssuer, expect, route: str
) -> None:
    client, _, _ = protected
    path, headers = "/v1/products", dict(IDENTITY_HEADERS)
    if route == "protected":
        path, headers = "/v1/orders", {**headers, **_bearer(token_issuer.issue("bob"))}
    # Each name twice, with different spellings, so no variant slips through.
    sent = [*headers.items(), *((name.lower(), value) for name, value in IDENTITY_HEADERS.items())]
    sent.append(("X-Custom-Header", "kept"))
    response = await client.get(path, headers=sent)
    received = expect.headers(await expect.echo(response))
    leaked = [name for name in IDENTITY_HEADERS if name in received]
    assert leaked == []
    assert received["X-Custom-Header"] == "kept"


async def test_forwarding_headers_a_client_sends_are_replaced_by_the_gateways_own(
    protected, expect
) -> None:
    client, _, _ = protected
    response = await client.get(
        "/v1/products",
        headers={
            "X-Forwarded-For": "10.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "https",
        },
    )
    received = expect.headers(await expect.echo(response))
    assert received.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert received.getall("X-Forwarded-Proto") == ["http"]
    assert received.getall("X-Forwarded-Host") != ["evil.example"]


async def test_an_unknown_kid_triggers_at_most_one_jwks_refetch(
    protected, token_issuer: TokenIssuer, jwks_server: JwksServer
) -> None:
    client, orders, _ = protected
    warm = await client.get("/v1/orders", headers=_bearer(token_issuer.issue("warm")))
    assert warm.status == 200  # the key set is loaded
    before = jwks_server.hits
    for i in range(5):
        token = token_issuer.issue(f"u{i}", headers={"kid": f"unknown-{i}"})
        response = await client.get("/v1/orders", headers=_bearer(token))
        assert response.status == 401
    tokens = [token_issuer.issue(f"c{i}", headers={"kid": f"unknown-c{i}"}) for i in range(10)]
    answers = await asyncio.gather(*(client.get("/v1/orders", headers=_bearer(t)) for t in tokens))
    assert [a.status for a in answers] == [401] * 10
    assert jwks_server.hits - before == 1
    assert orders.hits == 1


class _ShortJwksCache(GatewaySettings):
    """Gateway settings whose JWKS cache goes stale after a fraction of a second."""

    def verifier_settings(self) -> VerifierSettings:
        return dataclasses.replace(
            super().verifier_settings(), jwks_ttl_seconds=0.2, jwks_min_refetch_seconds=0.1
        )


async def test_the_jwks_being_down_keeps_the_last_good_keys_working(
    fakes, gateways, token_issuer: TokenIssuer, jwks_server: JwksServer, expect
) -> None:
    orders = await fakes.upstream("orders")
    client = await gateways.start({"orders": orders}, settings_class=_ShortJwksCache)
    first = await client.get("/v1/orders", headers=_bearer(token_issuer.issue("before")))
    assert first.status == 200
    with jwks_server.down():
        await asyncio.sleep(0.3)  # past the key set's TTL: every refresh now fails
        for i in range(3):
            token = token_issuer.issue(f"during-{i}")  # never seen: not in the token cache
            response = await client.get("/v1/orders", headers=_bearer(token))
            await expect.echo(response)
            await asyncio.sleep(0.15)
        forged = token_issuer.issue("x", headers={"kid": "unknown-during-outage"})
        refused = await client.get("/v1/orders", headers=_bearer(forged))
        await expect.problem(refused, 401, "unauthorized")
    assert orders.hits == 4


@pytest_asyncio.fixture(loop_scope="session")
async def own_jwks() -> AsyncIterator[tuple[TokenIssuer, JwksServer]]:
    """An issuer of this test alone, with its own JWKS endpoint (so it may rotate keys)."""
    issuer, server = TokenIssuer(), JwksServer()

    async def serve(_request: web.Request) -> web.Response:
        server.hits += 1
        return web.json_response(issuer.jwks())

    app = web.Application()
    app.router.add_get(JWKS_PATH, serve)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        server.url = f"http://{host}:{port}{JWKS_PATH}"
        yield issuer, server
    finally:
        await runner.cleanup()


async def test_a_rotated_key_is_picked_up_with_one_jwks_refetch(
    fakes, gateways, own_jwks: tuple[TokenIssuer, JwksServer], expect
) -> None:
    issuer, server = own_jwks
    orders = await fakes.upstream("orders")
    client = await gateways.start({"orders": orders}, jwt_jwks_url=server.url)
    old = await client.get("/v1/orders", headers=_bearer(issuer.issue("old")))
    await expect.echo(old)
    before = server.hits
    issuer.rotate()
    for subject in ("new-1", "new-2"):
        response = await client.get("/v1/orders", headers=_bearer(issuer.issue(subject)))
        await expect.echo(response)
    assert server.hits - before == 1
