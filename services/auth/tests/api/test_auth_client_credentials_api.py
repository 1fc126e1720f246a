"""POST /v1/auth/token, grant_type=client_credentials: form and Basic authentication, refusals."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from bazaar.auth.app import create_app
from bazaar.auth.config import AuthSettings, ClientConfig
from bazaar.shared.testing.asgi import serve_in_process

TOKEN = "/v1/auth/token"
Send = Callable[..., Awaitable[httpx.Response]]
Check = Callable[..., dict[str, Any]]


def basic(client_id: str, secret: str) -> dict[str, str]:
    """HTTP Basic as RFC 6749 §2.3.1 has it: each part form-encoded, then base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def claims_of(access_token: str) -> dict[str, Any]:
    return dict(jwt.decode(access_token, options={"verify_signature": False}))


def assert_service_token(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert "refresh_token" not in body
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "catalog:reserve"
    claims = claims_of(body["access_token"])
    assert claims["sub"] == "orders"
    assert claims["client_id"] == "orders"
    assert claims["scope"] == "catalog:reserve"
    assert claims["aud"] == "bazaar"
    assert claims["exp"] == claims["iat"] + 900
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"


async def test_form_credentials_get_a_service_token_without_a_refresh_token(
    client: httpx.AsyncClient, token: Send, orders_secret: str
) -> None:
    response = await token(
        grant_type="client_credentials", client_id="orders", client_secret=orders_secret
    )

    assert_service_token(response)


async def test_http_basic_credentials_get_a_service_token(
    client: httpx.AsyncClient, orders_secret: str
) -> None:
    response = await client.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers=basic("orders", orders_secret)
    )

    assert_service_token(response)


async def test_http_basic_with_the_client_id_also_in_the_form_is_accepted(
    client: httpx.AsyncClient, orders_secret: str
) -> None:
    response = await client.post(
        TOKEN,
        data={"grant_type": "client_credentials", "client_id": "orders"},
        headers=basic("orders", orders_secret),
    )

    assert_service_token(response)


async def test_the_client_may_ask_for_its_own_scope_explicitly(
    token: Send, orders_secret: str
) -> None:
    response = await token(
        grant_type="client_credentials",
        client_id="orders",
        client_secret=orders_secret,
        scope="catalog:reserve",
    )

    assert_service_token(response)


@pytest.mark.parametrize("scope", ["users:admin", "catalog:read", "catalog:reserve orders:admin"])
async def test_a_scope_the_client_lacks_answers_400_invalid_scope(
    token: Send, orders_secret: str, expect_oauth_error: Check, scope: str
) -> None:
    response = await token(
        grant_type="client_credentials",
        client_id="orders",
        client_secret=orders_secret,
        scope=scope,
    )

    expect_oauth_error(response, 400, "invalid_scope")


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        pytest.param("orders", "wrong-secret", id="wrong secret"),
        pytest.param("nobody", "orders-client-secret-for-tests", id="unknown client"),
        pytest.param("ORDERS", "orders-client-secret-for-tests", id="client id in another case"),
        pytest.param("nobody", "no such client", id="unknown client, placeholder secret"),
    ],
)
async def test_bad_form_credentials_answer_401_invalid_client(
    token: Send, expect_oauth_error: Check, client_id: str, secret: str
) -> None:
    response = await token(
        grant_type="client_credentials", client_id=client_id, client_secret=secret
    )

    expect_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({"client_id": "orders"}, id="no secret"),
        pytest.param({"client_id": "orders", "client_secret": ""}, id="empty secret"),
        pytest.param({"client_secret": "orders-client-secret-for-tests"}, id="no client id"),
    ],
)
async def test_missing_form_credentials_answer_400_invalid_request(
    token: Send, expect_oauth_error: Check, form: dict[str, str]
) -> None:
    response = await token(grant_type="client_credentials", **form)

    expect_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        pytest.param("orders", "wrong-secret", id="wrong secret"),
        pytest.param("nobody", "orders-client-secret-for-tests", id="unknown client"),
    ],
)
async def test_bad_basic_credentials_answer_401_invalid_client_with_a_basic_challenge(
    client: httpx.AsyncClient, expect_oauth_error: Check, client_id: str, secret: str
) -> None:
    response = await client.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
    )

    expect_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert "realm=" in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic !!!not-base64!!!", id="not base64"),
        pytest.param("Basic " + base64.b64encode(b"orders").decode(), id="no colon"),
        pytest.param("Bearer some.jwt.token", id="another scheme"),
        pytest.param("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), id="not utf-8"),
        pytest.param(b"Basic caf\xe9:s\xe9cret", id="not ascii"),
    ],
)
async def test_a_malformed_authorization_header_answers_401_with_a_basic_challenge(
    client: httpx.AsyncClient, expect_oauth_error: Check, authorization: str | bytes
) -> None:
    response = await client.post(
        TOKEN,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": authorization},
    )

    expect_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic ")


async def test_basic_and_a_form_secret_together_answer_400_invalid_request(
    client: httpx.AsyncClient, orders_secret: str, expect_oauth_error: Check
) -> None:
    response = await client.post(
        TOKEN,
        data={"grant_type": "client_credentials", "client_secret": orders_secret},
        headers=basic("orders", orders_secret),
    )

    expect_oauth_error(response, 400, "invalid_request")


async def test_unknown_client_and_wrong_secret_answer_alike(
    token: Send, expect_oauth_error: Check
) -> None:
    unknown = await token(grant_type="client_credentials", client_id="nobody", client_secret="s")
    wrong = await token(grant_type="client_credentials", client_id="orders", client_secret="s")

    assert expect_oauth_error(unknown, 401, "invalid_client") == expect_oauth_error(
        wrong, 401, "invalid_client"
    )


async def test_the_stored_client_keeps_a_digest_never_the_secret(
    client: httpx.AsyncClient, auth_db: Any, orders_secret: str
) -> None:
    row = await auth_db.fetchrow("SELECT * FROM service_client WHERE client_id = 'orders'")

    assert row is not None
    assert list(row["scopes"]) == ["catalog:reserve"]
    assert row["secret_hash"] != orders_secret
    for value in row.values():
        assert orders_secret not in str(value)
    assert orders_secret.encode().hex() not in row["secret_hash"]


async def test_a_secret_with_reserved_characters_works_through_basic_and_the_form(
    auth_settings: AuthSettings, auth_app: FastAPI
) -> None:
    assert auth_app is not None  # the database is emptied for this test
    secret = "s3cr3t: with+plus&amp=%25 ✓"
    settings = auth_settings.model_copy(
        update={
            "clients": (
                ClientConfig(
                    client_id="odd.client-1", secret=SecretStr(secret), scopes=("catalog:reserve",)
                ),
            )
        }
    )
    async with serve_in_process(create_app(settings), base_url="http://auth.test") as odd:
        by_basic = await odd.post(
            TOKEN, data={"grant_type": "client_credentials"}, headers=basic("odd.client-1", secret)
        )
        by_form = await odd.post(
            TOKEN,
            data={
                "grant_type": "client_credentials",
                "client_id": "odd.client-1",
                "client_secret": secret,
            },
        )

    assert by_basic.status_code == 200, by_basic.text
    assert by_form.status_code == 200, by_form.text
    assert claims_of(by_basic.json()["access_token"])["sub"] == "odd.client-1"


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        pytest.param("or\x00ders", "orders-client-secret-for-tests", id="NUL in client id"),
        pytest.param("orders", "orders-client\x00-secret", id="NUL in secret"),
        pytest.param("o" * 5000, "orders-client-secret-for-tests", id="a very long client id"),
    ],
)
async def test_odd_client_credentials_answer_in_rfc_6749_form_never_500(
    token: Send, client_id: str, secret: str
) -> None:
    response = await token(
        grant_type="client_credentials", client_id=client_id, client_secret=secret
    )

    assert response.status_code in (400, 401), response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] in {"invalid_request", "invalid_client"}
