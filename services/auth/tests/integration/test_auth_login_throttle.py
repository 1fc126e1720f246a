"""Failed logins slow an account down, the same way whether it exists or not, in PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bazaar.auth.config import AuthSettings

PASSWORD = "correct horse battery"
WRONG = "wrong horse battery"
Login = Callable[..., Awaitable[httpx.Response]]
Check = Callable[[httpx.Response], dict[str, Any]]


async def fail(login: Login, check: Check, email: str, times: int) -> httpx.Response:
    response = None
    for _ in range(times):
        response = await login(email, WRONG)
        check(response)
    assert response is not None
    return response


async def throttle_row(auth_db: Any, email_key: str) -> Any:
    return await auth_db.fetchrow(
        "SELECT failures, blocked_until, blocked_until > now() AS blocked"
        " FROM login_throttle WHERE email_key = $1",
        email_key,
    )


async def unblock(auth_db: Any, email_key: str) -> None:
    """Move the block into the past instead of sleeping through it."""
    status = await auth_db.execute(
        "UPDATE login_throttle SET blocked_until = now() - interval '1 second'"
        " WHERE email_key = $1",
        email_key,
    )
    assert status == "UPDATE 1"


async def test_after_the_allowed_failures_even_the_right_password_answers_the_same_400(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_invalid_grant: Check,
    auth_settings: AuthSettings,
    auth_db: Any,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    failures = auth_settings.login_failures_before_delay
    last_failure = await fail(login, expect_invalid_grant, "ada@example.com", failures)

    blocked = await login("ada@example.com", PASSWORD)

    assert expect_invalid_grant(blocked) == expect_invalid_grant(last_failure)
    assert blocked.content == last_failure.content
    assert "refresh_token" not in blocked.text and "access_token" not in blocked.text
    row = await throttle_row(auth_db, "ada@example.com")
    # The refused attempt is not counted: hammering a blocked account cannot lengthen it.
    assert row["failures"] == failures
    assert row["blocked"] is True


async def test_one_failure_fewer_than_allowed_does_not_block(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_invalid_grant: Check,
    auth_settings: AuthSettings,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    await fail(
        login,
        expect_invalid_grant,
        "ada@example.com",
        auth_settings.login_failures_before_delay - 1,
    )

    response = await login("ada@example.com", PASSWORD)

    assert response.status_code == 200, response.text


async def test_the_account_logs_in_again_once_the_block_has_passed(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_invalid_grant: Check,
    auth_settings: AuthSettings,
    auth_db: Any,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    await fail(
        login, expect_invalid_grant, "ada@example.com", auth_settings.login_failures_before_delay
    )
    expect_invalid_grant(await login("ada@example.com", PASSWORD))

    await unblock(auth_db, "ada@example.com")
    response = await login("ada@example.com", PASSWORD)

    assert response.status_code == 200, response.text
    assert await throttle_row(auth_db, "ada@example.com") is None


async def test_a_nonexistent_account_is_throttled_exactly_like_an_existing_one(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_invalid_grant: Check,
    auth_settings: AuthSettings,
    auth_db: Any,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    failures = auth_settings.login_failures_before_delay
    await fail(login, expect_invalid_grant, "ada@example.com", failures)
    await fail(login, expect_invalid_grant, "ghost@example.com", failures)

    existing = await login("ada@example.com", PASSWORD)
    ghost = await login("ghost@example.com", PASSWORD)

    assert expect_invalid_grant(existing) == expect_invalid_grant(ghost)
    assert existing.content == ghost.content
    ada_row = await throttle_row(auth_db, "ada@example.com")
    ghost_row = await throttle_row(auth_db, "ghost@example.com")
    assert (ada_row["failures"], ada_row["blocked"]) == (
        ghost_row["failures"],
        ghost_row["blocked"],
    )
    assert ghost_row["failures"] == failures and ghost_row["blocked"] is True


async def test_a_success_clears_the_failures(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_invalid_grant: Check,
    auth_settings: AuthSettings,
    auth_db: Any,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    almost = auth_settings.login_failures_before_delay - 1
    await fail(login, expect_invalid_grant, "ada@example.com", almost)
    assert (await login("ada@example.com", PASSWORD)).status_code == 200
    assert await throttle_row(auth_db, "ada@example.com") is None

    await fail(login, expect_invalid_grant, "ada@example.com", almost)
    response = await login("ada@example.com", PASSWORD)

    assert response.status_code == 200, response.text


async def test_failures_under_any_case_of_the_email_count_for_one_account(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_invalid_grant: Check,
    auth_settings: AuthSettings,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    spellings = ["ADA@EXAMPLE.COM", "Ada@Example.com", "ada@EXAMPLE.com", "aDa@example.Com"]
    for i in range(auth_settings.login_failures_before_delay):
        expect_invalid_grant(await login(spellings[i % len(spellings)], WRONG))

    response = await login("ada@example.com", PASSWORD)

    expect_invalid_grant(response)


async def test_a_blocked_account_does_not_block_another(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_invalid_grant: Check,
    auth_settings: AuthSettings,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    await register(email="bob@example.com", password=PASSWORD, name="Bob")
    await fail(
        login, expect_invalid_grant, "ada@example.com", auth_settings.login_failures_before_delay
    )

    response = await login("bob@example.com", PASSWORD)

    assert response.status_code == 200, response.text


async def test_each_further_failure_after_a_block_blocks_for_longer(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_invalid_grant: Check,
    auth_settings: AuthSettings,
    auth_db: Any,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    await fail(
        login, expect_invalid_grant, "ada@example.com", auth_settings.login_failures_before_delay
    )
    block = "SELECT blocked_until - last_failed_at FROM login_throttle WHERE email_key = $1"
    first = await auth_db.fetchval(block, "ada@example.com")
    await unblock(auth_db, "ada@example.com")

    await fail(login, expect_invalid_grant, "ada@example.com", 1)

    second = await auth_db.fetchval(block, "ada@example.com")
    assert first.total_seconds() > 0
    assert second > first
    assert (await throttle_row(auth_db, "ada@example.com"))["blocked"] is True


async def test_parallel_guesses_get_at_most_the_allowed_number_of_password_checks(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Login,
    expect_invalid_grant: Check,
    auth_settings: AuthSettings,
    auth_app: Any,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    passwords = auth_app.state.passwords
    checks = 0
    original = passwords.verify

    async def counting_verify(password_hash: str | None, password: str) -> bool:
        nonlocal checks
        checks += 1
        result: bool = await original(password_hash, password)
        return result

    passwords.verify = counting_verify
    try:
        answers = await asyncio.gather(
            *(login("ada@example.com", f"wrong guess number {i}") for i in range(20))
        )
    finally:
        passwords.verify = original

    assert all(expect_invalid_grant(a) for a in answers)
    assert checks == auth_settings.login_failures_before_delay
