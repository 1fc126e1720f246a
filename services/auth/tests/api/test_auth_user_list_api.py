"""GET /v1/users: admins only; newest first; keyset pages that skip and repeat nobody."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from .conftest import Account

USERS = "/v1/users"
USER_FIELDS = {"id", "email", "name", "roles", "created_at"}
Check = Callable[..., dict[str, Any]]


async def insert_users(auth_db: Any, count: int, *, at: datetime | None = None) -> list[str]:
    """Store `count` users directly (no hashing), created a second apart or all at `at`."""
    base = datetime.now(UTC) - timedelta(days=1)
    ids = []
    for i in range(count):
        user_id = uuid.uuid4()
        created = at or base + timedelta(seconds=i)
        await auth_db.execute(
            "INSERT INTO user_account (id, email, name, roles, password_hash, created_at)"
            " VALUES ($1, $2, $3, $4, 'not-a-hash', $5)",
            user_id,
            f"user{i}-{user_id.hex[:6]}@example.com",
            f"User {i}",
            ["customer"],
            created,
        )
        ids.append(str(user_id))
    return ids


async def walk(
    client: httpx.AsyncClient, headers: dict[str, str], limit: int
) -> tuple[list[str], list[httpx.Response]]:
    """Follow next_cursor to the end; return every id in order and every page's answer."""
    ids: list[str] = []
    pages: list[httpx.Response] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(100):
        response = await client.get(USERS, params=params, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response)
        body = response.json()
        ids += [item["id"] for item in body["items"]]
        if body["next_cursor"] is None:
            return ids, pages
        params = {"limit": limit, "cursor": body["next_cursor"]}
    raise AssertionError("pagination never ended")


async def test_an_admin_gets_the_users_newest_first(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    register: Callable[..., Awaitable[dict[str, Any]]],
) -> None:
    ada = await register(email="ada@example.com")
    bob = await register(email="bob@example.com", name="Bob")

    response = await client.get(USERS, headers=admin_headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"items", "next_cursor"}
    assert body["next_cursor"] is None
    assert "link" not in response.headers
    assert [item["id"] for item in body["items"]][:2] == [bob["id"], ada["id"]]
    assert body["items"][-1]["roles"] == ["admin"]  # the bootstrap admin came first
    for item in body["items"]:
        assert set(item) == USER_FIELDS
    assert body["items"][1] == ada


async def test_walking_the_pages_yields_every_user_once_in_order(
    client: httpx.AsyncClient, admin_headers: dict[str, str], auth_db: Any
) -> None:
    await insert_users(auth_db, 7)
    expected = [
        str(r["id"])
        for r in await auth_db.fetch(
            "SELECT id FROM user_account ORDER BY created_at DESC, id DESC"
        )
    ]

    ids, pages = await walk(client, admin_headers, limit=3)

    assert ids == expected
    assert len(pages) == 3
    assert pages[-1].json()["next_cursor"] is None


async def test_users_created_in_the_same_instant_are_each_listed_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str], auth_db: Any
) -> None:
    stored = await insert_users(auth_db, 6, at=datetime(2030, 1, 1, tzinfo=UTC))

    ids, _ = await walk(client, admin_headers, limit=2)

    assert len(ids) == len(set(ids)) == 7
    assert set(stored) <= set(ids)
    assert ids[:6] == sorted(stored, reverse=True)  # ties broken by id, descending


async def test_a_page_with_more_to_come_has_a_link_to_the_next(
    client: httpx.AsyncClient, admin_headers: dict[str, str], auth_db: Any
) -> None:
    await insert_users(auth_db, 3)

    response = await client.get(USERS, params={"limit": 2}, headers=admin_headers)

    body = response.json()
    assert len(body["items"]) == 2
    assert isinstance(body["next_cursor"], str) and body["next_cursor"]
    link = response.headers["link"]
    assert link.endswith('; rel="next"')
    target = link[link.index("<") + 1 : link.index(">")]
    parts = urlsplit(target)
    assert parts.path == USERS
    query = parse_qs(parts.query)
    assert query["cursor"] == [body["next_cursor"]]
    assert query["limit"] == ["2"]
    followed = await client.get(target, headers=admin_headers)
    assert followed.status_code == 200
    assert [i["id"] for i in followed.json()["items"]] == [
        i["id"]
        for i in (
            await client.get(
                USERS, params={"limit": 2, "cursor": body["next_cursor"]}, headers=admin_headers
            )
        ).json()["items"]
    ]


async def test_users_added_between_pages_neither_skip_nor_repeat_anyone(
    client: httpx.AsyncClient, admin_headers: dict[str, str], auth_db: Any
) -> None:
    await insert_users(auth_db, 5)
    before = [
        str(r["id"])
        for r in await auth_db.fetch(
            "SELECT id FROM user_account ORDER BY created_at DESC, id DESC"
        )
    ]
    first = (await client.get(USERS, params={"limit": 2}, headers=admin_headers)).json()
    await insert_users(auth_db, 3, at=datetime.now(UTC) + timedelta(seconds=1))

    seen = [item["id"] for item in first["items"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = (
            await client.get(USERS, params={"limit": 2, "cursor": cursor}, headers=admin_headers)
        ).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        assert len(seen) <= len(before) + 10, "the pages never end"

    assert seen == before


@pytest.mark.parametrize("limit", [1, 100])
async def test_limits_of_1_and_100_are_accepted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], limit: int
) -> None:
    response = await client.get(USERS, params={"limit": limit}, headers=admin_headers)

    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 1


async def test_the_default_page_holds_20_users(
    client: httpx.AsyncClient, admin_headers: dict[str, str], auth_db: Any
) -> None:
    await insert_users(auth_db, 21)

    body = (await client.get(USERS, headers=admin_headers)).json()

    assert len(body["items"]) == 20
    assert body["next_cursor"] is not None


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", ""])
async def test_a_limit_out_of_bounds_answers_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str], expect_problem: Check, limit: str
) -> None:
    response = await client.get(USERS, params={"limit": limit}, headers=admin_headers)

    body = expect_problem(response, 422, "validation-error")
    assert any("limit" in error["loc"] for error in body["errors"]), body


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "WzEsIm5vdCBhIGRhdGUiLCJ4Il0", "!!"])
async def test_a_cursor_that_is_not_ours_answers_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str], expect_problem: Check, cursor: str
) -> None:
    response = await client.get(USERS, params={"cursor": cursor}, headers=admin_headers)

    expect_problem(response, 422, "validation-error")


async def test_a_customer_gets_403_forbidden(
    customer: Account, client: httpx.AsyncClient, expect_problem: Check
) -> None:
    response = await client.get(USERS, headers=customer.headers)

    expect_problem(response, 403, "forbidden")


async def test_an_admin_token_narrowed_without_users_admin_gets_403(
    client: httpx.AsyncClient,
    login: Callable[..., Awaitable[httpx.Response]],
    bearer: Callable[[str], dict[str, str]],
    auth_settings: Any,
    expect_problem: Check,
) -> None:
    narrowed = await login(
        auth_settings.admin_email,
        auth_settings.admin_password.get_secret_value(),
        scope="catalog:read orders:admin",
    )

    response = await client.get(USERS, headers=bearer(narrowed.json()["access_token"]))

    expect_problem(response, 403, "forbidden")


async def test_a_service_token_gets_403_forbidden(
    client: httpx.AsyncClient, service_headers: dict[str, str], expect_problem: Check
) -> None:
    response = await client.get(USERS, headers=service_headers)

    expect_problem(response, 403, "forbidden")


async def test_no_token_gets_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, expect_problem: Check
) -> None:
    response = await client.get(USERS)

    expect_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
