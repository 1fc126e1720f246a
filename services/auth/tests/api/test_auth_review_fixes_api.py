"""Client retirement, 401 challenges, Basic credentials with NUL, production settings, GET user."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import SecretStr

from bazaar.auth.app import create_app
from bazaar.auth.config import AuthSettings, ClientConfig
from bazaar.shared.testing.asgi import serve_in_process

TOKEN = "/v1/auth/token"
ORDERS_SECRET = "orders-client-secret-for-tests"


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def test_nul_in_basic_credentials_is_invalid_client_not_500(
    client: httpx.AsyncClient,
) -> None:
    for client_id, secret in (("orders%00", "x"), ("orders\x00", "x"), ("orders", "a%00b")):
        response = await client.post(
            TOKEN, data={"grant_type": "client_credentials"}, headers=_basic(client_id, secret)
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.headers["cache-control"] == "no-store"


async def test_every_invalid_client_answer_carries_a_challenge(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TOKEN,
        data={"grant_type": "client_credentials", "client_id": "orders", "client_secret": "no"},
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_a_client_removed_from_the_settings_stops_working_at_the_next_start(
    auth_settings: AuthSettings, client: httpx.AsyncClient
) -> None:
    form = {"grant_type": "client_credentials", "client_id": "orders"}
    before = await client.post(TOKEN, data={**form, "client_secret": ORDERS_SECRET})
    assert before.status_code == 200

    retired = auth_settings.model_copy(update={"clients": ()})
    async with serve_in_process(create_app(retired)) as restarted:
        after = await restarted.post(TOKEN, data={**form, "client_secret": ORDERS_SECRET})
    assert after.status_code == 401
    assert after.json()["error"] == "invalid_client"


def test_auth_loads_in_production_with_real_secrets() -> None:
    settings = AuthSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        database_url="postgresql://auth:Zx81-real-password@db.internal:5432/auth",
        key_passphrase=SecretStr("k3y-pass-phrase-from-a-secret-store-7f2c9a"),
        admin_password=SecretStr("an-admin-password-from-a-secret-store-91b"),
        clients=(
            ClientConfig(
                client_id="orders",
                secret=SecretStr("orders-secret-from-a-secret-store-5e3d"),
                scopes=("catalog:reserve",),
            ),
        ),
    )
    assert settings.insecure_values() == []


async def test_the_registration_location_answers_for_an_admin(
    client: httpx.AsyncClient,
    register: Callable[..., Awaitable[dict[str, Any]]],
    token: Callable[..., Awaitable[httpx.Response]],
    bearer: Callable[[str], dict[str, str]],
    auth_settings: AuthSettings,
) -> None:
    created = await client.post(
        "/v1/users",
        json={"email": "loc@example.com", "password": "correct horse battery", "name": "L"},
    )
    location = created.headers["location"]
    admin = await token(
        grant_type="password",
        username=auth_settings.admin_email,
        password=auth_settings.admin_password.get_secret_value(),
    )
    customer = await token(
        grant_type="password", username="loc@example.com", password="correct horse battery"
    )

    found = await client.get(location, headers=bearer(admin.json()["access_token"]))
    assert found.status_code == 200 and found.json() == created.json()
    refused = await client.get(location, headers=bearer(customer.json()["access_token"]))
    assert refused.status_code == 403
    missing = await client.get(
        "/v1/users/00000000-0000-4000-8000-000000000000",
        headers=bearer(admin.json()["access_token"]),
    )
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("/not-found")


def test_production_refuses_a_short_key_passphrase() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"key_passphrase \(needs at least 32"):
        AuthSettings(
            _env_file=None,  # type: ignore[call-arg]
            environment="production",
            database_url="postgresql://auth:Zx81-real-password@db.internal:5432/auth",
            key_passphrase=SecretStr("Q7v9-short-passphrase"),
            admin_password=SecretStr("an-admin-password-from-a-secret-store-91b"),
            clients=(),
        )
