"""Auth integration fixtures: the real database behind a started app, logins, answer checks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from bazaar.auth.config import AuthSettings


@pytest_asyncio.fixture
async def auth_db(auth_app: FastAPI, auth_settings: AuthSettings) -> AsyncIterator[Any]:
    """A plain asyncpg connection to the (emptied) auth database, for checking what is stored."""
    conn = await asyncpg.connect(auth_settings.dsn())
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=json.dumps, decoder=json.loads
        )
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def login(
    token: Callable[..., Awaitable[httpx.Response]],
) -> Callable[..., Awaitable[httpx.Response]]:
    """POST a password grant for `username` and `password` (plus any other form fields)."""

    async def _login(username: str, password: str, **form: str) -> httpx.Response:
        return await token(grant_type="password", username=username, password=password, **form)

    return _login


@pytest.fixture
def expect_invalid_grant() -> Callable[[httpx.Response], dict[str, Any]]:
    """Check a response is the RFC 6749 invalid_grant answer; return its body."""

    def check(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        body: dict[str, Any] = response.json()
        assert body["error"] == "invalid_grant", body
        return body

    return check
