"""Refresh tokens in PostgreSQL: stored only hashed, one family per login, one use under races."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

PASSWORD = "correct horse battery"
Send = Callable[..., Awaitable[httpx.Response]]


def contains(value: Any, plain: str) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return plain.encode() in raw or plain in raw.hex()
    return plain in str(value)


async def logged_in(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Send
) -> tuple[dict[str, Any], dict[str, Any]]:
    user = await register(email="ada@example.com", password=PASSWORD)
    response = await login("ada@example.com", PASSWORD)
    assert response.status_code == 200, response.text
    return user, response.json()


async def test_no_refresh_token_is_stored_in_plain(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Send,
    token: Send,
    auth_db: Any,
) -> None:
    _, tokens = await logged_in(register, login)
    rotated = await token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    plain = [tokens["refresh_token"], rotated.json()["refresh_token"]]

    rows = await auth_db.fetch("SELECT * FROM refresh_token")

    assert len(rows) == 2
    for row in rows:
        for value in row.values():
            for secret in plain:
                assert not contains(value, secret), (row, secret)


async def test_a_login_starts_a_family_and_each_refresh_adds_one_token_to_it(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Send,
    token: Send,
    auth_db: Any,
) -> None:
    user, tokens = await logged_in(register, login)
    second_login = (await login("ada@example.com", PASSWORD)).json()
    rotated = await token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert rotated.status_code == 200

    rows = await auth_db.fetch(
        "SELECT family_id, used_at, revoked_at, user_id, expires_at > now() AS live"
        " FROM refresh_token ORDER BY created_at"
    )

    assert second_login["refresh_token"]
    assert len(rows) == 3
    assert len({r["family_id"] for r in rows}) == 2
    assert all(str(r["user_id"]) == user["id"] and r["live"] for r in rows)
    assert sum(r["used_at"] is not None for r in rows) == 1
    assert all(r["revoked_at"] is None for r in rows)


async def test_concurrent_refreshes_with_one_token_let_at_most_one_through(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Send,
    token: Send,
    auth_db: Any,
) -> None:
    _, tokens = await logged_in(register, login)

    responses = await asyncio.gather(
        *(
            token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
            for _ in range(8)
        )
    )

    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] <= 1, [r.text for r in responses]
    assert set(statuses) <= {200, 400}
    for loser in (r for r in responses if r.status_code == 400):
        assert loser.json()["error"] == "invalid_grant"
    # The old token was used at most once: at most one successor was ever made.
    assert await auth_db.fetchval("SELECT count(*) FROM refresh_token") <= 2


async def test_a_race_that_replays_a_token_leaves_no_usable_token_in_the_family(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Send,
    token: Send,
) -> None:
    _, tokens = await logged_in(register, login)

    responses = await asyncio.gather(
        *(
            token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
            for _ in range(2)
        )
    )

    # Two uses of one token: one of them is a replay, so the whole family ends revoked.
    for winner in (r for r in responses if r.status_code == 200):
        successor = winner.json()["refresh_token"]
        again = await token(grant_type="refresh_token", refresh_token=successor)
        assert again.status_code == 400, again.text
        assert again.json()["error"] == "invalid_grant"


async def test_deleting_a_user_leaves_no_refresh_token_behind(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Send,
    token: Send,
    auth_db: Any,
) -> None:
    user, tokens = await logged_in(register, login)

    await auth_db.execute("DELETE FROM user_account WHERE id = $1::uuid", user["id"])

    assert await auth_db.fetchval("SELECT count(*) FROM refresh_token") == 0
    response = await token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
