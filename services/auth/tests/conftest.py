"""Auth test fixtures: a migrated database per run, emptied before each test, and the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr

from bazaar.auth.app import create_app
from bazaar.auth.cli import MIGRATIONS_DIR
from bazaar.auth.config import AuthSettings, ClientConfig
from bazaar.shared import migrations
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.postgres import DatabaseFactory, json_connection, truncate_all

ADMIN_EMAIL = "admin@bazaar.test"
ADMIN_PASSWORD = "admin-password-for-tests"
ORDERS_SECRET = "orders-client-secret-for-tests"
ISSUER = "http://gateway.bazaar.test"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def auth_database_url(database_factory: DatabaseFactory) -> str:
    """A database for this run, migrated to head."""
    url = await database_factory.create("auth")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    return url


@pytest.fixture
def auth_settings(auth_database_url: str) -> AuthSettings:
    """Settings pointing at the run's database, with a known admin and service client."""
    return AuthSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=auth_database_url,
        jwt_issuer=ISSUER,
        admin_email=ADMIN_EMAIL,
        admin_password=SecretStr(ADMIN_PASSWORD),
        clients=(
            ClientConfig(
                client_id="orders", secret=SecretStr(ORDERS_SECRET), scopes=("catalog:reserve",)
            ),
        ),
        db_pool_max=20,
    )


@pytest_asyncio.fixture
async def auth_app(auth_settings: AuthSettings) -> FastAPI:
    """An auth app over an emptied database (not started)."""
    await truncate_all(auth_settings.dsn())
    return create_app(auth_settings)


@pytest_asyncio.fixture
async def client(auth_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to a started auth app."""
    async with serve_in_process(auth_app, base_url="http://auth.test") as c:
        yield c


@pytest.fixture
def register(client: httpx.AsyncClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Register a user and return the 201 body."""

    async def _register(
        email: str = "ada@example.com", password: str = "correct horse battery", name: str = "Ada"
    ) -> dict[str, Any]:
        response = await client.post(
            "/v1/users", json={"email": email, "password": password, "name": name}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return _register


@pytest.fixture
def token(client: httpx.AsyncClient) -> Callable[..., Awaitable[httpx.Response]]:
    """POST a form to the token endpoint."""

    async def _token(**form: str) -> httpx.Response:
        return await client.post("/v1/auth/token", data=form)

    return _token


@pytest.fixture
def bearer() -> Callable[[str], dict[str, str]]:
    """Authorization headers for an access token."""
    return lambda access_token: {"Authorization": f"Bearer {access_token}"}


@pytest_asyncio.fixture
async def auth_db(auth_app: FastAPI, auth_settings: AuthSettings) -> AsyncIterator[Any]:
    """A plain asyncpg connection to the (emptied) auth database, for checking what is stored."""
    async with json_connection(auth_settings.dsn()) as conn:
        yield conn


@pytest.fixture
def login(
    token: Callable[..., Awaitable[httpx.Response]],
) -> Callable[..., Awaitable[httpx.Response]]:
    """POST a password grant for `username` and `password` (plus any other form fields)."""

    async def _login(username: str, password: str, **form: str) -> httpx.Response:
        return await token(grant_type="password", username=username, password=password, **form)

    return _login
