"""POST /v1/auth/token, grant_type=password: the answer, the access token, scopes, refusals."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
import pytest

from bazaar.auth.config import AuthSettings
from bazaar.shared.auth import TokenVerifier

from .conftest import Account

TOKEN = "/v1/auth/token"
FORM = "application/x-www-form-urlencoded"
CUSTOMER_SCOPES = "catalog:read orders:read orders:write"
USER_SCOPES = {
    "catalog:read",
    "catalog:write",
    "orders:read",
    "orders:write",
    "orders:admin",
    "users:admin",
}

Login = Callable[..., Awaitable[httpx.Response]]
Check = Callable[..., dict[str, Any]]


def claims_of(access_token: str) -> dict[str, Any]:
    return dict(jwt.decode(access_token, options={"verify_signature": False}))


async def test_a_customer_login_answers_200_with_bearer_tokens_that_no_cache_keeps(
    login: Login, register: Callable[..., Awaitable[dict[str, Any]]]
) -> None:
    await register(email="ada@example.com", password="correct horse battery")

    response = await login("ada@example.com", "correct horse battery")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == CUSTOMER_SCOPES
    assert isinstance(body["refresh_token"], str) and len(body["refresh_token"]) >= 32
    assert body["refresh_token"].count(".") != 2  # opaque, not a JWT


async def test_the_access_token_header_names_a_published_key_and_the_at_jwt_type(
    customer: Account, client: httpx.AsyncClient
) -> None:
    header = jwt.get_unverified_header(customer.tokens["access_token"])

    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    jwks = (await client.get("/.well-known/jwks.json")).json()
    published = {key["kid"]: key for key in jwks["keys"]}
    assert header["kid"] in published
    assert published[header["kid"]]["alg"] == "ES256"
    assert published[header["kid"]]["use"] == "sig"


async def test_the_access_token_carries_every_claim_of_api_md(
    customer: Account, auth_settings: AuthSettings
) -> None:
    before = int(time.time())
    claims = claims_of(customer.tokens["access_token"])

    assert set(claims) >= {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "scope", "client_id"}
    assert claims["iss"] == auth_settings.jwt_issuer
    assert claims["aud"] == "bazaar"
    assert claims["sub"] == customer.id
    assert claims["exp"] == claims["iat"] + 900
    assert abs(claims["iat"] - before) <= 5
    assert claims["nbf"] <= claims["iat"] + 1
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert claims["scope"] == CUSTOMER_SCOPES
    assert claims["client_id"] == "bazaar-web"


async def test_the_access_token_verifies_against_the_published_jwks(
    customer: Account, verifier: TokenVerifier
) -> None:
    principal = await verifier.verify(customer.tokens["access_token"])

    assert principal.subject == customer.id
    assert principal.scopes == frozenset(CUSTOMER_SCOPES.split())
    assert principal.client_id == "bazaar-web"


async def test_two_logins_get_tokens_with_different_jti_and_refresh_tokens(
    customer: Account, login: Login
) -> None:
    again = await login(customer.email, customer.password)

    assert again.status_code == 200
    assert (
        claims_of(again.json()["access_token"])["jti"]
        != claims_of(customer.tokens["access_token"])["jti"]
    )
    assert again.json()["refresh_token"] != customer.tokens["refresh_token"]


async def test_an_admin_login_carries_every_user_scope_and_no_service_scope(
    admin_tokens: dict[str, Any],
) -> None:
    assert set(admin_tokens["scope"].split()) == USER_SCOPES
    assert set(claims_of(admin_tokens["access_token"])["scope"].split()) == USER_SCOPES


@pytest.mark.parametrize("username", ["ADA@EXAMPLE.COM", "Ada@Example.com", "ada@EXAMPLE.com"])
async def test_the_username_is_case_insensitive(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Login, username: str
) -> None:
    user = await register(email="ada@example.com")

    response = await login(username, "correct horse battery")

    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["sub"] == user["id"]


async def test_a_user_registered_in_mixed_case_logs_in_in_lower_case(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Login
) -> None:
    await register(email="Grace.Hopper@Example.COM")

    response = await login("grace.hopper@example.com", "correct horse battery")

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "scope", ["catalog:read", "orders:read orders:write", "orders:write catalog:read"]
)
async def test_a_requested_subset_of_scopes_is_all_the_token_carries(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Login, scope: str
) -> None:
    await register()

    response = await login("ada@example.com", "correct horse battery", scope=scope)

    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == set(scope.split())
    assert set(claims_of(response.json()["access_token"])["scope"].split()) == set(scope.split())


@pytest.mark.parametrize(
    "scope",
    [
        "users:admin",
        "catalog:read users:admin",
        "catalog:write",
        "orders:admin",
        "catalog:reserve",
        "no-such:scope",
    ],
)
async def test_a_scope_beyond_the_role_answers_400_invalid_scope(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_oauth_error: Check,
    scope: str,
) -> None:
    await register()

    response = await login("ada@example.com", "correct horse battery", scope=scope)

    expect_oauth_error(response, 400, "invalid_scope")


async def test_an_admin_cannot_ask_for_a_service_scope(
    login: Login, auth_settings: AuthSettings, expect_oauth_error: Check
) -> None:
    response = await login(
        auth_settings.admin_email,
        auth_settings.admin_password.get_secret_value(),
        scope="users:admin catalog:reserve",
    )

    expect_oauth_error(response, 400, "invalid_scope")


async def test_unknown_user_and_wrong_password_answer_the_same_400_invalid_grant(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Login, expect_oauth_error: Check
) -> None:
    await register()

    unknown = await login("nobody@example.com", "correct horse battery")
    wrong = await login("ada@example.com", "wrong horse battery")

    assert expect_oauth_error(unknown, 400, "invalid_grant") == expect_oauth_error(
        wrong, 400, "invalid_grant"
    )
    assert unknown.content == wrong.content
    for name in ("content-type", "cache-control", "pragma", "www-authenticate"):
        assert unknown.headers.get(name) == wrong.headers.get(name)


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({"username": "ada@example.com", "password": "x" * 12}, id="no grant_type"),
        pytest.param({"grant_type": "", "username": "ada@example.com"}, id="empty grant_type"),
        pytest.param({"grant_type": "password", "password": "x" * 12}, id="no username"),
        pytest.param({"grant_type": "password", "username": "ada@example.com"}, id="no password"),
        pytest.param(
            {"grant_type": "password", "username": "", "password": "x" * 12}, id="empty username"
        ),
        pytest.param(
            {"grant_type": "password", "username": "ada@example.com", "password": ""},
            id="empty password",
        ),
        pytest.param({}, id="empty form"),
    ],
)
async def test_a_missing_parameter_answers_400_invalid_request(
    client: httpx.AsyncClient, expect_oauth_error: Check, form: dict[str, str]
) -> None:
    response = await client.post(TOKEN, data=form, headers={"Content-Type": FORM})

    expect_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "grant_type", ["authorization_code", "implicit", "PASSWORD", "urn:x:unknown", "token"]
)
async def test_an_unknown_grant_type_answers_400_unsupported_grant_type(
    token: Login, expect_oauth_error: Check, grant_type: str
) -> None:
    response = await token(grant_type=grant_type, username="ada@example.com", password="x" * 12)

    expect_oauth_error(response, 400, "unsupported_grant_type")


async def test_a_json_body_instead_of_a_form_answers_400_invalid_request(
    client: httpx.AsyncClient,
    register: Callable[..., Awaitable[dict[str, Any]]],
    expect_oauth_error: Check,
) -> None:
    await register()
    form = {
        "grant_type": "password",
        "username": "ada@example.com",
        "password": "correct horse battery",
    }

    response = await client.post(TOKEN, json=form)

    expect_oauth_error(response, 400, "invalid_request")


async def test_a_multipart_body_answers_400_invalid_request(
    client: httpx.AsyncClient,
    register: Callable[..., Awaitable[dict[str, Any]]],
    expect_oauth_error: Check,
) -> None:
    await register()
    form = {
        "grant_type": "password",
        "username": "ada@example.com",
        "password": "correct horse battery",
    }

    response = await client.post(TOKEN, data=form, files={"x": ("x.txt", b"x")})

    expect_oauth_error(response, 400, "invalid_request")


async def test_a_form_content_type_with_a_charset_is_accepted(
    client: httpx.AsyncClient, register: Callable[..., Awaitable[dict[str, Any]]]
) -> None:
    await register()

    response = await client.post(
        TOKEN,
        content=b"grant_type=password&username=ada%40example.com&password=correct+horse+battery",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            "grant_type=password&grant_type=password&username=ada%40example.com"
            "&password=correct+horse+battery",
            id="grant_type twice",
        ),
        pytest.param(
            "grant_type=password&username=ada%40example.com&username=ada%40example.com"
            "&password=correct+horse+battery",
            id="username twice",
        ),
        pytest.param(
            "grant_type=password&username=ada%40example.com"
            "&password=wrong&password=correct+horse+battery",
            id="password twice",
        ),
        pytest.param(
            "grant_type=password&username=ada%40example.com&password=correct+horse+battery"
            "&scope=catalog%3Aread&scope=orders%3Aread",
            id="scope twice",
        ),
    ],
)
async def test_a_parameter_sent_twice_answers_400_invalid_request(
    client: httpx.AsyncClient,
    register: Callable[..., Awaitable[dict[str, Any]]],
    expect_oauth_error: Check,
    content: str,
) -> None:
    await register()

    response = await client.post(TOKEN, content=content, headers={"Content-Type": FORM})

    expect_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("client_id", ["orders", "bazaar-mobile", "BAZAAR-WEB"])
async def test_a_client_id_other_than_bazaar_web_answers_401_invalid_client(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_oauth_error: Check,
    client_id: str,
) -> None:
    await register()

    response = await login("ada@example.com", "correct horse battery", client_id=client_id)

    expect_oauth_error(response, 401, "invalid_client")


async def test_the_bazaar_web_client_id_may_be_sent_on_the_password_grant(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Login
) -> None:
    await register()

    response = await login("ada@example.com", "correct horse battery", client_id="bazaar-web")

    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["client_id"] == "bazaar-web"


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({"username": "ada\x00@example.com"}, id="NUL in username"),
        pytest.param({"password": "correct horse\x00battery"}, id="NUL in password"),
        pytest.param({"scope": "catalog:read\x00"}, id="NUL in scope"),
        pytest.param({"username": "x" * 5000 + "@example.com"}, id="a very long username"),
    ],
)
async def test_odd_characters_in_a_login_answer_in_rfc_6749_form_never_500(
    register: Callable[..., Awaitable[dict[str, Any]]], token: Login, form: dict[str, str]
) -> None:
    await register()
    fields = {
        "grant_type": "password",
        "username": "ada@example.com",
        "password": "correct horse battery",
        **form,
    }

    response = await token(**fields)

    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] in {"invalid_request", "invalid_grant", "invalid_scope"}


async def test_an_empty_client_id_counts_as_omitted(
    client: httpx.AsyncClient, register: Any
) -> None:
    # RFC 6749 §3.2: a parameter sent without a value is treated as if it were omitted.
    await register(email="empty@example.com", password="correct horse battery")
    response = await client.post(
        "/v1/auth/token",
        data={
            "grant_type": "password",
            "username": "empty@example.com",
            "password": "correct horse battery",
            "client_id": "",
        },
    )
    assert response.status_code == 200, response.text
