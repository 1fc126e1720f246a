"""Auth API fixtures: the database behind the app, logins, tokens and checks of error answers."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from bazaar.auth.config import AuthSettings
from bazaar.shared.auth import TokenVerifier, VerifierSettings

CUSTOMER_PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Account:
    """A registered user, logged in: the 201 body, its password, tokens and bearer headers."""

    user: dict[str, Any]
    password: str
    tokens: dict[str, Any]
    headers: dict[str, str]

    @property
    def id(self) -> str:
        """The user's id."""
        return str(self.user["id"])

    @property
    def email(self) -> str:
        """The user's email."""
        return str(self.user["email"])


@pytest.fixture
def refresh(
    token: Callable[..., Awaitable[httpx.Response]],
) -> Callable[..., Awaitable[httpx.Response]]:
    """POST a refresh_token grant."""

    async def _refresh(refresh_token: str, **form: str) -> httpx.Response:
        return await token(grant_type="refresh_token", refresh_token=refresh_token, **form)

    return _refresh


@pytest.fixture
def sign_up(
    register: Callable[..., Awaitable[dict[str, Any]]],
    login: Callable[..., Awaitable[httpx.Response]],
    bearer: Callable[[str], dict[str, str]],
) -> Callable[..., Awaitable[Account]]:
    """Register a user and log them in."""

    async def _sign_up(
        email: str = "ada@example.com", password: str = CUSTOMER_PASSWORD, name: str = "Ada"
    ) -> Account:
        user = await register(email=email, password=password, name=name)
        response = await login(email, password)
        assert response.status_code == 200, response.text
        tokens = response.json()
        return Account(user, password, tokens, bearer(tokens["access_token"]))

    return _sign_up


@pytest_asyncio.fixture
async def customer(sign_up: Callable[..., Awaitable[Account]]) -> Account:
    """A logged-in customer (ada@example.com)."""
    return await sign_up()


@pytest_asyncio.fixture
async def admin_tokens(
    login: Callable[..., Awaitable[httpx.Response]], auth_settings: AuthSettings
) -> dict[str, Any]:
    """The token response of the bootstrap admin's login."""
    response = await login(
        auth_settings.admin_email, auth_settings.admin_password.get_secret_value()
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def admin_headers(
    admin_tokens: dict[str, Any], bearer: Callable[[str], dict[str, str]]
) -> dict[str, str]:
    """Bearer headers of the bootstrap admin."""
    return bearer(admin_tokens["access_token"])


@pytest.fixture
def orders_secret(auth_settings: AuthSettings) -> str:
    """The configured secret of the `orders` service client."""
    (orders,) = (c for c in auth_settings.clients if c.client_id == "orders")
    return orders.secret.get_secret_value()


@pytest_asyncio.fixture
async def service_headers(
    token: Callable[..., Awaitable[httpx.Response]],
    orders_secret: str,
    bearer: Callable[[str], dict[str, str]],
) -> dict[str, str]:
    """Bearer headers of a client-credentials token of `orders`."""
    response = await token(
        grant_type="client_credentials", client_id="orders", client_secret=orders_secret
    )
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


@pytest_asyncio.fixture
async def verifier(
    client: httpx.AsyncClient, auth_settings: AuthSettings
) -> AsyncIterator[TokenVerifier]:
    """The shared verifier, reading the started app's JWKS in-process."""
    settings = VerifierSettings(
        jwks_url=f"{client.base_url}/.well-known/jwks.json", issuer=auth_settings.jwt_issuer
    )
    verifier = TokenVerifier(settings, client=client)
    try:
        yield verifier
    finally:
        await verifier.aclose()


@pytest.fixture
def sign(
    client: httpx.AsyncClient, auth_app: FastAPI, auth_settings: AuthSettings
) -> Callable[..., Awaitable[str]]:
    """Sign claims with the started app's own key: a real token, with claims of our choosing."""
    assert client is not None  # the app must be started: its key ring lives in the lifespan

    async def _sign(subject: str, **changes: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": auth_settings.jwt_issuer,
            "aud": auth_settings.jwt_audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + auth_settings.access_token_ttl_seconds,
            "jti": str(uuid.uuid4()),
            "scope": "catalog:read orders:read orders:write",
            "client_id": auth_settings.public_client_id,
            **changes,
        }
        token: str = await auth_app.state.keyring.sign(claims)
        return token

    return _sign


@pytest.fixture
def expect_oauth_error() -> Callable[..., dict[str, Any]]:
    """Check a response is an RFC 6749 §5.2 error (never a problem), uncacheable; return it."""

    def check(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"
        body: dict[str, Any] = response.json()
        assert body["error"] == error, body
        assert "type" not in body and "status" not in body  # not a problem document
        assert set(body) <= {"error", "error_description", "error_uri"}
        return body

    return check
