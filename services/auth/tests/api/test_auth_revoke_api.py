"""POST /v1/auth/revoke (RFC 7009): 200 whatever the token, and a revoked family stays dead."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from .conftest import Account

REVOKE = "/v1/auth/revoke"
Send = Callable[..., Awaitable[httpx.Response]]
Check = Callable[..., dict[str, Any]]


def assert_revoked_answer(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_revoking_a_refresh_token_answers_200_and_it_no_longer_refreshes(
    customer: Account, client: httpx.AsyncClient, refresh: Send, expect_oauth_error: Check
) -> None:
    response = await client.post(REVOKE, data={"token": customer.tokens["refresh_token"]})

    assert_revoked_answer(response)
    expect_oauth_error(await refresh(customer.tokens["refresh_token"]), 400, "invalid_grant")


async def test_revoking_the_newest_token_of_a_family_answers_200_and_kills_it(
    customer: Account, client: httpx.AsyncClient, refresh: Send, expect_oauth_error: Check
) -> None:
    newest = (await refresh(customer.tokens["refresh_token"])).json()["refresh_token"]

    assert_revoked_answer(await client.post(REVOKE, data={"token": newest}))

    expect_oauth_error(await refresh(newest), 400, "invalid_grant")


async def test_revoking_a_spent_token_revokes_the_rest_of_its_family(
    customer: Account, client: httpx.AsyncClient, refresh: Send, expect_oauth_error: Check
) -> None:
    newest = (await refresh(customer.tokens["refresh_token"])).json()["refresh_token"]

    assert_revoked_answer(
        await client.post(REVOKE, data={"token": customer.tokens["refresh_token"]})
    )

    expect_oauth_error(await refresh(newest), 400, "invalid_grant")


async def test_revoking_one_family_leaves_another_login_working(
    customer: Account, client: httpx.AsyncClient, login: Send, refresh: Send
) -> None:
    other = (await login(customer.email, customer.password)).json()["refresh_token"]

    assert_revoked_answer(
        await client.post(REVOKE, data={"token": customer.tokens["refresh_token"]})
    )

    assert (await refresh(other)).status_code == 200


async def test_a_token_type_hint_does_not_stop_a_refresh_token_being_revoked(
    customer: Account, client: httpx.AsyncClient, refresh: Send, expect_oauth_error: Check
) -> None:
    # RFC 7009 §2.1: a wrong hint makes the server look further, not give up.
    response = await client.post(
        REVOKE,
        data={"token": customer.tokens["refresh_token"], "token_type_hint": "access_token"},
    )

    assert_revoked_answer(response)
    expect_oauth_error(await refresh(customer.tokens["refresh_token"]), 400, "invalid_grant")


async def test_revoking_twice_answers_200_both_times(
    customer: Account, client: httpx.AsyncClient
) -> None:
    first = await client.post(REVOKE, data={"token": customer.tokens["refresh_token"]})
    second = await client.post(REVOKE, data={"token": customer.tokens["refresh_token"]})

    assert_revoked_answer(first)
    assert_revoked_answer(second)


@pytest.mark.parametrize("garbage", ["garbage", "x" * 43, "a.b.c", "ünïcode"])
async def test_revoking_garbage_answers_200_and_changes_nothing(
    customer: Account, client: httpx.AsyncClient, refresh: Send, auth_db: Any, garbage: str
) -> None:
    response = await client.post(REVOKE, data={"token": garbage})

    assert_revoked_answer(response)
    assert (
        await auth_db.fetchval("SELECT count(*) FROM refresh_token WHERE revoked_at IS NOT NULL")
        == 0
    )
    assert (await refresh(customer.tokens["refresh_token"])).status_code == 200


async def test_revoking_an_access_token_answers_200_and_leaves_the_refresh_token_working(
    customer: Account, client: httpx.AsyncClient, refresh: Send
) -> None:
    response = await client.post(
        REVOKE, data={"token": customer.tokens["access_token"], "token_type_hint": "access_token"}
    )

    assert_revoked_answer(response)
    assert (await refresh(customer.tokens["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({}, id="no token"),
        pytest.param({"token": ""}, id="empty token"),
        pytest.param({"token_type_hint": "refresh_token"}, id="only a hint"),
    ],
)
async def test_a_missing_token_answers_400_invalid_request(
    client: httpx.AsyncClient, expect_oauth_error: Check, form: dict[str, str]
) -> None:
    response = await client.post(
        REVOKE, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )

    expect_oauth_error(response, 400, "invalid_request")


async def test_a_json_body_answers_400_invalid_request_and_revokes_nothing(
    customer: Account,
    client: httpx.AsyncClient,
    refresh: Send,
    expect_oauth_error: Check,
) -> None:
    response = await client.post(REVOKE, json={"token": customer.tokens["refresh_token"]})

    expect_oauth_error(response, 400, "invalid_request")
    assert (await refresh(customer.tokens["refresh_token"])).status_code == 200


async def test_a_token_sent_twice_answers_400_invalid_request(
    customer: Account, client: httpx.AsyncClient, expect_oauth_error: Check
) -> None:
    rt = customer.tokens["refresh_token"]

    response = await client.post(
        REVOKE,
        content=f"token={rt}&token=garbage",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    expect_oauth_error(response, 400, "invalid_request")
