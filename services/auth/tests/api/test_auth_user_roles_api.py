"""PATCH /v1/users/{id}: admins replace a user's roles; the next token carries the new scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from .conftest import Account

Check = Callable[..., dict[str, Any]]
Send = Callable[..., Awaitable[httpx.Response]]
USER_SCOPES = {
    "catalog:read",
    "catalog:write",
    "orders:read",
    "orders:write",
    "orders:admin",
    "users:admin",
}


async def test_an_admin_makes_a_customer_an_admin_and_their_next_login_has_admin_scopes(
    customer: Account,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    login: Send,
    auth_db: Any,
) -> None:
    response = await client.patch(
        f"/v1/users/{customer.id}", json={"roles": ["admin"]}, headers=admin_headers
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {**customer.user, "roles": ["admin"]}
    roles = await auth_db.fetchval(
        "SELECT roles FROM user_account WHERE id = $1::uuid", customer.id
    )
    assert list(roles) == ["admin"]
    again = await login(customer.email, customer.password)
    assert set(again.json()["scope"].split()) == USER_SCOPES


async def test_both_roles_together_are_accepted(
    customer: Account, client: httpx.AsyncClient, admin_headers: dict[str, str], login: Send
) -> None:
    response = await client.patch(
        f"/v1/users/{customer.id}", json={"roles": ["customer", "admin"]}, headers=admin_headers
    )

    assert response.status_code == 200, response.text
    assert set(response.json()["roles"]) == {"customer", "admin"}
    again = await login(customer.email, customer.password)
    assert set(again.json()["scope"].split()) == USER_SCOPES


async def test_an_admin_made_a_customer_again_loses_the_admin_scopes_at_next_login(
    customer: Account, client: httpx.AsyncClient, admin_headers: dict[str, str], login: Send
) -> None:
    url = f"/v1/users/{customer.id}"
    await client.patch(url, json={"roles": ["admin"]}, headers=admin_headers)

    response = await client.patch(url, json={"roles": ["customer"]}, headers=admin_headers)

    assert response.json()["roles"] == ["customer"]
    again = await login(customer.email, customer.password)
    assert again.json()["scope"] == "catalog:read orders:read orders:write"


async def test_an_unknown_id_answers_404_not_found(
    client: httpx.AsyncClient, admin_headers: dict[str, str], expect_problem: Check
) -> None:
    response = await client.patch(
        "/v1/users/00000000-0000-4000-8000-000000000000",
        json={"roles": ["admin"]},
        headers=admin_headers,
    )

    expect_problem(response, 404, "not-found")


@pytest.mark.parametrize("user_id", ["not-a-uuid", "123", "00000000-0000-4000-8000-00000000000"])
async def test_an_id_that_is_not_a_uuid_answers_404_or_422_never_500(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    expect_problem: Check,
    user_id: str,
) -> None:
    response = await client.patch(
        f"/v1/users/{user_id}", json={"roles": ["admin"]}, headers=admin_headers
    )

    assert response.status_code in (404, 422), response.text
    expect_problem(
        response,
        response.status_code,
        "not-found" if response.status_code == 404 else "validation-error",
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"roles": ["superuser"]}, id="invalid role"),
        pytest.param({"roles": ["admin", "root"]}, id="one invalid role"),
        pytest.param({"roles": ["Admin"]}, id="role in another case"),
        pytest.param({"roles": []}, id="empty list"),
        pytest.param({"roles": "admin"}, id="a string, not a list"),
        pytest.param({"roles": None}, id="null"),
        pytest.param({}, id="no roles"),
        pytest.param({"roles": ["admin"], "email": "evil@example.com"}, id="extra email"),
        pytest.param({"roles": ["admin"], "password": "p" * 20}, id="extra password"),
        pytest.param({"email": "evil@example.com"}, id="email only"),
    ],
)
async def test_an_invalid_body_answers_422_and_changes_nothing(
    customer: Account,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    expect_problem: Check,
    auth_db: Any,
    body: dict[str, Any],
) -> None:
    response = await client.patch(f"/v1/users/{customer.id}", json=body, headers=admin_headers)

    expect_problem(response, 422, "validation-error")
    stored = await auth_db.fetchrow(
        "SELECT email, roles FROM user_account WHERE id = $1::uuid", customer.id
    )
    assert (stored["email"], list(stored["roles"])) == (customer.email, ["customer"])


async def test_the_extra_field_is_named_in_the_errors(
    customer: Account,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    expect_problem: Check,
) -> None:
    response = await client.patch(
        f"/v1/users/{customer.id}",
        json={"roles": ["admin"], "email": "evil@example.com"},
        headers=admin_headers,
    )

    body = expect_problem(response, 422, "validation-error")
    assert any(error["loc"][-1] == "email" for error in body["errors"]), body


async def test_a_customer_gets_403_and_changes_nothing(
    customer: Account, client: httpx.AsyncClient, expect_problem: Check, auth_db: Any
) -> None:
    response = await client.patch(
        f"/v1/users/{customer.id}", json={"roles": ["admin"]}, headers=customer.headers
    )

    expect_problem(response, 403, "forbidden")
    roles = await auth_db.fetchval(
        "SELECT roles FROM user_account WHERE id = $1::uuid", customer.id
    )
    assert list(roles) == ["customer"]


async def test_a_service_token_gets_403(
    customer: Account,
    client: httpx.AsyncClient,
    service_headers: dict[str, str],
    expect_problem: Check,
) -> None:
    response = await client.patch(
        f"/v1/users/{customer.id}", json={"roles": ["admin"]}, headers=service_headers
    )

    expect_problem(response, 403, "forbidden")


async def test_no_token_gets_401(
    customer: Account, client: httpx.AsyncClient, expect_problem: Check
) -> None:
    response = await client.patch(f"/v1/users/{customer.id}", json={"roles": ["admin"]})

    expect_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
