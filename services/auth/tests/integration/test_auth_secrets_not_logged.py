"""Passwords and tokens never reach a log record, whatever happens to the request."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

PASSWORD = "pw-that-must-never-be-logged-7f3a"
WRONG = "wrong-pw-that-must-never-be-logged-91c2"


def everything_in(record: logging.LogRecord) -> str:
    """The message, its arguments, any extra fields and any exception text of a record."""
    text = [record.getMessage(), repr(record.args), repr(vars(record))]
    if record.exc_info:
        text.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(text)


async def test_register_login_refresh_and_failed_logins_log_no_password_or_token(
    client: httpx.AsyncClient,
    login: Callable[..., Awaitable[httpx.Response]],
    token: Callable[..., Awaitable[httpx.Response]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    registered = await client.post(
        "/v1/users", json={"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}
    )
    too_short = await client.post(
        "/v1/users", json={"email": "bob@example.com", "password": "short-pw", "name": "Bob"}
    )
    good = await login("ada@example.com", PASSWORD)
    bad = await login("ada@example.com", WRONG)
    unknown = await login("nobody@example.com", WRONG)
    refreshed = await token(grant_type="refresh_token", refresh_token=good.json()["refresh_token"])
    replayed = await token(grant_type="refresh_token", refresh_token=good.json()["refresh_token"])

    statuses = [r.status_code for r in (registered, too_short, good, bad, unknown, refreshed)]
    assert statuses == [201, 422, 200, 400, 400, 200]
    assert replayed.status_code == 400
    assert caplog.records, "the requests should have been logged at all"
    secrets = {
        "password": PASSWORD,
        "wrong password": WRONG,
        "short password": "short-pw",
        "access token": good.json()["access_token"],
        "refresh token": good.json()["refresh_token"],
        "rotated refresh token": refreshed.json()["refresh_token"],
    }
    for record in caplog.records:
        logged = everything_in(record)
        for what, secret in secrets.items():
            assert secret not in logged, f"{what} logged by {record.name}: {record.getMessage()}"


async def test_a_failed_registration_logs_no_password(
    client: httpx.AsyncClient, auth_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A server error is logged with its exception: the password must not be in it either.
    await auth_db.execute(
        "ALTER TABLE user_account ADD CONSTRAINT test_refuse_ada CHECK (email <> 'ada@example.com')"
        " NOT VALID"
    )
    caplog.set_level(logging.DEBUG)
    try:
        response = await client.post(
            "/v1/users", json={"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}
        )
    finally:
        await auth_db.execute("ALTER TABLE user_account DROP CONSTRAINT test_refuse_ada")

    assert response.status_code == 500
    assert any(record.levelno >= logging.ERROR for record in caplog.records)
    for record in caplog.records:
        assert PASSWORD not in everything_in(record), record.name
