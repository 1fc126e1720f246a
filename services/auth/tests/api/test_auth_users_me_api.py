"""GET /v1/users/me: the user a token speaks for; every token that is not one answered right."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from .conftest import Account

ME = "/v1/users/me"
Check = Callable[..., dict[str, Any]]
Sign = Callable[..., Awaitable[str]]


async def test_me_answers_200_with_the_user_as_registered(
    customer: Account, client: httpx.AsyncClient
) -> None:
    response = await client.get(ME, headers=customer.headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == customer.user


async def test_me_answers_the_admin_for_the_admin(
    client: httpx.AsyncClient, admin_headers: dict[str, str], auth_settings: Any
) -> None:
    response = await client.get(ME, headers=admin_headers)

    assert response.status_code == 200, response.text
    assert response.json()["email"] == auth_settings.admin_email
    assert response.json()["roles"] == ["admin"]


async def test_me_works_with_a_token_narrowed_to_one_scope(
    customer: Account,
    client: httpx.AsyncClient,
    login: Callable[..., Awaitable[httpx.Response]],
    bearer: Callable[[str], dict[str, str]],
) -> None:
    narrow = await login(customer.email, customer.password, scope="catalog:read")

    response = await client.get(ME, headers=bearer(narrow.json()["access_token"]))

    assert response.status_code == 200, response.text
    assert response.json()["id"] == customer.id


async def test_me_shows_roles_changed_since_the_token_was_issued(
    customer: Account, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await client.patch(f"/v1/users/{customer.id}", json={"roles": ["admin"]}, headers=admin_headers)

    response = await client.get(ME, headers=customer.headers)

    assert response.json()["roles"] == ["admin"]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no header"),
        pytest.param({"Authorization": ""}, id="empty header"),
        pytest.param({"Authorization": "Bearer"}, id="scheme only"),
        pytest.param({"Authorization": "Basic b3JkZXJzOnNlY3JldA=="}, id="basic"),
    ],
)
async def test_no_token_answers_401_with_a_bearer_challenge(
    customer: Account, client: httpx.AsyncClient, expect_problem: Check, headers: dict[str, str]
) -> None:
    response = await client.get(ME, headers=headers)

    expect_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "invalid_token" not in response.headers["www-authenticate"]


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."])
async def test_a_garbage_token_answers_401_invalid_token(
    customer: Account, client: httpx.AsyncClient, expect_problem: Check, garbage: str
) -> None:
    response = await client.get(ME, headers={"Authorization": f"Bearer {garbage}"})

    expect_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_an_expired_token_answers_401_invalid_token(
    customer: Account, client: httpx.AsyncClient, sign: Sign, expect_problem: Check
) -> None:
    now = int(time.time())
    expired = await sign(customer.id, iat=now - 1000, nbf=now - 1000, exp=now - 100)

    response = await client.get(ME, headers={"Authorization": f"Bearer {expired}"})

    expect_problem(response, 401, "unauthorized")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_tampered_token_answers_401_invalid_token(
    customer: Account, client: httpx.AsyncClient, expect_problem: Check
) -> None:
    header, payload, signature = customer.tokens["access_token"].split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"

    response = await client.get(ME, headers={"Authorization": f"Bearer {forged}"})

    expect_problem(response, 401, "unauthorized")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_token_of_another_issuer_answers_401_invalid_token(
    customer: Account, client: httpx.AsyncClient, sign: Sign, expect_problem: Check
) -> None:
    foreign = await sign(customer.id, iss="https://elsewhere.example")

    response = await client.get(ME, headers={"Authorization": f"Bearer {foreign}"})

    expect_problem(response, 401, "unauthorized")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_client_credentials_token_answers_403_forbidden(
    client: httpx.AsyncClient, service_headers: dict[str, str], expect_problem: Check
) -> None:
    response = await client.get(ME, headers=service_headers)

    expect_problem(response, 403, "forbidden")


async def test_a_valid_token_of_a_user_that_does_not_exist_is_not_answered_200(
    client: httpx.AsyncClient, sign: Sign
) -> None:
    ghost = await sign("00000000-0000-4000-8000-000000000000")

    response = await client.get(ME, headers={"Authorization": f"Bearer {ghost}"})

    assert response.status_code in (401, 403, 404), response.text
    assert response.headers["content-type"] == "application/problem+json"
