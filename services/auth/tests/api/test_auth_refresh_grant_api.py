"""POST /v1/auth/token, grant_type=refresh_token: rotation, reuse, expiry, scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
import pytest

from .conftest import Account

Send = Callable[..., Awaitable[httpx.Response]]
Check = Callable[..., dict[str, Any]]
CUSTOMER_SCOPES = {"catalog:read", "orders:read", "orders:write"}
USER_SCOPES = {
    "catalog:read",
    "catalog:write",
    "orders:read",
    "orders:write",
    "orders:admin",
    "users:admin",
}


def claims_of(access_token: str) -> dict[str, Any]:
    return dict(jwt.decode(access_token, options={"verify_signature": False}))


async def test_a_refresh_answers_a_new_access_and_refresh_token(
    customer: Account, refresh: Send
) -> None:
    response = await refresh(customer.tokens["refresh_token"])

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert set(body["scope"].split()) == CUSTOMER_SCOPES
    assert body["refresh_token"] != customer.tokens["refresh_token"]
    assert body["access_token"] != customer.tokens["access_token"]
    old, new = claims_of(customer.tokens["access_token"]), claims_of(body["access_token"])
    assert new["sub"] == customer.id
    assert new["client_id"] == "bazaar-web"
    assert new["jti"] != old["jti"]
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"


async def test_the_new_refresh_token_refreshes_again(customer: Account, refresh: Send) -> None:
    first = await refresh(customer.tokens["refresh_token"])
    second = await refresh(first.json()["refresh_token"])
    third = await refresh(second.json()["refresh_token"])

    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]


async def test_a_used_refresh_token_answers_invalid_grant_and_revokes_its_replacement(
    customer: Account, refresh: Send, expect_oauth_error: Check, auth_db: Any
) -> None:
    rotated = await refresh(customer.tokens["refresh_token"])
    assert rotated.status_code == 200
    replacement = rotated.json()["refresh_token"]

    reuse = await refresh(customer.tokens["refresh_token"])

    expect_oauth_error(reuse, 400, "invalid_grant")
    expect_oauth_error(await refresh(replacement), 400, "invalid_grant")
    unrevoked = await auth_db.fetchval(
        "SELECT count(*) FROM refresh_token WHERE user_id = $1::uuid AND revoked_at IS NULL",
        customer.id,
    )
    assert unrevoked == 0


async def test_reuse_revokes_the_newest_of_a_longer_family(
    customer: Account, refresh: Send, expect_oauth_error: Check
) -> None:
    first = (await refresh(customer.tokens["refresh_token"])).json()["refresh_token"]
    second = (await refresh(first)).json()["refresh_token"]
    newest = (await refresh(second)).json()["refresh_token"]

    expect_oauth_error(await refresh(first), 400, "invalid_grant")

    expect_oauth_error(await refresh(newest), 400, "invalid_grant")


async def test_reuse_leaves_an_unrelated_family_of_the_same_user_untouched(
    customer: Account, login: Send, refresh: Send, expect_oauth_error: Check
) -> None:
    other_login = await login(customer.email, customer.password)
    other = other_login.json()["refresh_token"]
    assert (await refresh(customer.tokens["refresh_token"])).status_code == 200

    expect_oauth_error(await refresh(customer.tokens["refresh_token"]), 400, "invalid_grant")

    assert (await refresh(other)).status_code == 200


async def test_reuse_leaves_another_users_family_untouched(
    customer: Account,
    sign_up: Callable[..., Awaitable[Account]],
    refresh: Send,
    expect_oauth_error: Check,
) -> None:
    bob = await sign_up(email="bob@example.com", name="Bob")
    assert (await refresh(customer.tokens["refresh_token"])).status_code == 200

    expect_oauth_error(await refresh(customer.tokens["refresh_token"]), 400, "invalid_grant")

    assert (await refresh(bob.tokens["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    "refresh_token",
    [
        "garbage",
        "x" * 43,
        "not a token at all, with spaces",
        "\u00e9\u00e8\u00ea",
    ],
)
async def test_an_unknown_refresh_token_answers_400_invalid_grant(
    customer: Account, refresh: Send, expect_oauth_error: Check, refresh_token: str
) -> None:
    response = await refresh(refresh_token)

    expect_oauth_error(response, 400, "invalid_grant")


async def test_an_access_token_is_no_refresh_token(
    customer: Account, refresh: Send, expect_oauth_error: Check
) -> None:
    response = await refresh(customer.tokens["access_token"])

    expect_oauth_error(response, 400, "invalid_grant")


async def test_a_missing_refresh_token_answers_400_invalid_request(
    customer: Account, token: Send, expect_oauth_error: Check
) -> None:
    response = await token(grant_type="refresh_token")

    expect_oauth_error(response, 400, "invalid_request")


async def test_an_expired_refresh_token_answers_400_invalid_grant(
    customer: Account, refresh: Send, expect_oauth_error: Check, auth_db: Any
) -> None:
    updated = await auth_db.execute(
        "UPDATE refresh_token SET expires_at = now() - interval '1 second'"
        " WHERE user_id = $1::uuid",
        customer.id,
    )
    assert updated == "UPDATE 1"

    response = await refresh(customer.tokens["refresh_token"])

    expect_oauth_error(response, 400, "invalid_grant")


async def test_a_refresh_may_narrow_the_scope(customer: Account, refresh: Send) -> None:
    response = await refresh(customer.tokens["refresh_token"], scope="catalog:read")

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "catalog:read"
    assert claims_of(response.json()["access_token"])["scope"] == "catalog:read"


async def test_a_narrowed_refresh_does_not_shrink_the_original_grant(
    customer: Account, refresh: Send
) -> None:
    # RFC 6749 §6: an omitted scope is the scope originally granted by the resource owner.
    narrowed = await refresh(customer.tokens["refresh_token"], scope="catalog:read")

    response = await refresh(narrowed.json()["refresh_token"])

    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == CUSTOMER_SCOPES


@pytest.mark.parametrize("scope", ["users:admin", "catalog:read users:admin", "catalog:reserve"])
async def test_a_refresh_asking_beyond_the_original_grant_answers_400_invalid_scope(
    customer: Account, refresh: Send, expect_oauth_error: Check, scope: str
) -> None:
    response = await refresh(customer.tokens["refresh_token"], scope=scope)

    expect_oauth_error(response, 400, "invalid_scope")


async def test_a_refresh_cannot_widen_a_narrowed_login(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Send,
    refresh: Send,
    expect_oauth_error: Check,
) -> None:
    await register()
    narrow = await login("ada@example.com", "correct horse battery", scope="catalog:read")
    assert narrow.status_code == 200, narrow.text

    widened = await refresh(narrow.json()["refresh_token"], scope="orders:write")
    plain = await refresh(narrow.json()["refresh_token"])

    expect_oauth_error(widened, 400, "invalid_scope")
    assert plain.status_code == 200, plain.text
    assert plain.json()["scope"] == "catalog:read"


async def test_a_user_demoted_from_admin_gets_only_customer_scopes_on_refresh(
    customer: Account,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    login: Send,
    refresh: Send,
) -> None:
    promoted = await client.patch(
        f"/v1/users/{customer.id}", json={"roles": ["admin"]}, headers=admin_headers
    )
    assert promoted.status_code == 200, promoted.text
    as_admin = await login(customer.email, customer.password)
    assert set(as_admin.json()["scope"].split()) == USER_SCOPES
    demoted = await client.patch(
        f"/v1/users/{customer.id}", json={"roles": ["customer"]}, headers=admin_headers
    )
    assert demoted.status_code == 200, demoted.text

    response = await refresh(as_admin.json()["refresh_token"])

    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == CUSTOMER_SCOPES
    assert set(claims_of(response.json()["access_token"])["scope"].split()) == CUSTOMER_SCOPES


async def test_a_demoted_user_cannot_ask_for_the_lost_scope_on_refresh(
    customer: Account,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    login: Send,
    refresh: Send,
    expect_oauth_error: Check,
) -> None:
    await client.patch(f"/v1/users/{customer.id}", json={"roles": ["admin"]}, headers=admin_headers)
    as_admin = await login(customer.email, customer.password)
    await client.patch(
        f"/v1/users/{customer.id}", json={"roles": ["customer"]}, headers=admin_headers
    )

    response = await refresh(as_admin.json()["refresh_token"], scope="users:admin")

    expect_oauth_error(response, 400, "invalid_scope")
