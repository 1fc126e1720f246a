"""Orders' contract with auth, written by orders' tests: contracts/pacts/orders-auth.json.

Orders asks auth's token endpoint for its service token with the client-credentials grant
(HTTP Basic client authentication, RFC 6749 §2.3.1) and reads `access_token` and
`expires_in`; a refused client is an RFC 6749 error. The tests drive orders' REAL token
client, built as orders' app builds it (`service_tokens`: the endpoint's path and the scope),
against Pact's mock auth; the last one also checks the committed pact is the one they write.
(That the token is cached is orders' integration tests' business: Pact's mock answers any
number of requests.)
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest
from pact import Pact, match

from bazaar.orders.adapters.tokens import ServiceTokens, TokenUnavailable, service_tokens
from bazaar.shared.testing.pacts import check_pact, mock_provider, new_pact, write_pact

#: The service client as auth's provider state sets it up (a test client, nothing real).
CLIENT: dict[str, Any] = {
    "client_id": "orders",
    "client_secret": "pact",
    "scope": "catalog:reserve",
}
WRONG = "nope"
FORM = "application/x-www-form-urlencoded"


def _basic(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: each half form-urlencoded, then HTTP Basic."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _grant(pact: Pact, description: str, client_secret: str) -> Any:
    """The token request as orders' client sends it (the answer is added by the caller)."""
    return (
        pact.upon_receiving(description)
        .given("the service client exists", **CLIENT)
        .with_request("POST", "/v1/auth/token")
        .with_header("Authorization", _basic(CLIENT["client_id"], client_secret))
        .with_body("grant_type=client_credentials&scope=catalog%3Areserve", content_type=FORM)
    )


def service_token(pact: Pact) -> None:
    """The grant: 200 with the access token and its lifetime (what orders reads of it)."""
    (
        _grant(
            pact, "a client-credentials grant for orders' service token", CLIENT["client_secret"]
        )
        .will_respond_with(200)
        .with_body(
            {"access_token": match.str("orders-access-token"), "expires_in": match.int(900)},
            content_type="application/json",
        )
    )


async def get_service_token(tokens: Callable[[str], ServiceTokens]) -> None:
    assert await tokens(CLIENT["client_secret"]).get() == "orders-access-token"


def refused_client(pact: Pact) -> None:
    """A wrong secret: 401 invalid_client, in RFC 6749 form."""
    (
        _grant(pact, "a client-credentials grant with a wrong secret", WRONG)
        .will_respond_with(401)
        .with_body({"error": "invalid_client"}, content_type="application/json")
    )


async def get_refused(tokens: Callable[[str], ServiceTokens]) -> None:
    with pytest.raises(TokenUnavailable, match=r"auth answered 401 \(invalid_client\)"):
        await tokens(WRONG).get()


#: Each interaction orders relies on, and the token client's call that relies on it.
CALLS: Mapping[
    str, tuple[Callable[[Pact], None], Callable[[Callable[[str], ServiceTokens]], Awaitable[None]]]
] = {
    "orders gets its service token": (service_token, get_service_token),
    "a refused client gets no token": (refused_client, get_refused),
}


def _tokens(session: aiohttp.ClientSession, url: str) -> Callable[[str], ServiceTokens]:
    """Orders' real token client, as its app builds it, against auth at `url` (its base URL),
    with a given client secret."""

    def client(client_secret: str) -> ServiceTokens:
        return service_tokens(
            session, auth_url=url, client_id=CLIENT["client_id"], client_secret=client_secret
        )

    return client


@pytest.mark.parametrize(("interaction", "call"), CALLS.values(), ids=CALLS.keys())
async def test_the_token_client_keeps_to_the_contract(
    interaction: Callable[[Pact], None],
    call: Callable[[Callable[[str], ServiceTokens]], Awaitable[None]],
    http_session: aiohttp.ClientSession,
) -> None:
    pact = new_pact("orders", "auth")
    interaction(pact)
    with mock_provider(pact) as url:
        await call(_tokens(http_session, url))


async def test_the_committed_pact_is_the_one_orders_tests_write(
    http_session: aiohttp.ClientSession,
) -> None:
    pact = new_pact("orders", "auth")
    for interaction, _ in CALLS.values():
        interaction(pact)
    with mock_provider(pact) as url:
        for _, call in CALLS.values():
            await call(_tokens(http_session, url))

    drift = check_pact(write_pact(pact), written_by=__file__)
    assert drift is None, drift
