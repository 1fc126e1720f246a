"""Start-up: the configured admin and service clients exist, once, and follow the settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
from pydantic import SecretStr

from bazaar.auth.app import create_app
from bazaar.auth.config import AuthSettings, ClientConfig
from bazaar.shared.testing.asgi import serve_in_process

BASE_URL = "http://auth.test"
USER_SCOPES = {
    "catalog:read",
    "catalog:write",
    "orders:read",
    "orders:write",
    "orders:admin",
    "users:admin",
}
Login = Callable[..., Awaitable[httpx.Response]]


def orders_secret(settings: AuthSettings) -> str:
    (orders,) = (c for c in settings.clients if c.client_id == "orders")
    return orders.secret.get_secret_value()


async def client_token(client: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    return await client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


async def test_the_configured_admin_exists_after_start_up_and_logs_in_with_every_user_scope(
    client: httpx.AsyncClient, login: Login, auth_settings: AuthSettings, auth_db: Any
) -> None:
    rows = await auth_db.fetch(
        "SELECT id, email, name, roles FROM user_account WHERE lower(email) = lower($1)",
        auth_settings.admin_email,
    )

    assert len(rows) == 1
    assert list(rows[0]["roles"]) == ["admin"]
    assert rows[0]["name"] == auth_settings.admin_name
    response = await login(
        auth_settings.admin_email, auth_settings.admin_password.get_secret_value()
    )
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == USER_SCOPES
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == str(rows[0]["id"])


async def test_the_configured_service_client_exists_after_start_up(
    client: httpx.AsyncClient, auth_settings: AuthSettings, auth_db: Any
) -> None:
    row = await auth_db.fetchrow("SELECT scopes FROM service_client WHERE client_id = 'orders'")

    assert row is not None and list(row["scopes"]) == ["catalog:reserve"]
    assert (await client_token(client, "orders", orders_secret(auth_settings))).status_code == 200


async def test_starting_twice_neither_duplicates_the_admin_nor_changes_their_password(
    client: httpx.AsyncClient, login: Login, auth_settings: AuthSettings, auth_db: Any
) -> None:
    admin = "SELECT id, password_hash, roles FROM user_account WHERE lower(email) = lower($1)"
    before = await auth_db.fetch(admin, auth_settings.admin_email)
    changed = auth_settings.model_copy(
        update={"admin_password": SecretStr("another-admin-password-for-tests")}
    )

    async with serve_in_process(create_app(changed), base_url=BASE_URL) as second:
        again = await second.post(
            "/v1/auth/token",
            data={
                "grant_type": "password",
                "username": auth_settings.admin_email,
                "password": auth_settings.admin_password.get_secret_value(),
            },
        )

    after = await auth_db.fetch(admin, auth_settings.admin_email)
    assert len(after) == 1
    assert after == before
    assert await auth_db.fetchval("SELECT count(*) FROM user_account") == 1
    assert again.status_code == 200, again.text
    refused = await login(auth_settings.admin_email, "another-admin-password-for-tests")
    assert refused.status_code == 400
    events = await auth_db.fetchval(
        "SELECT count(*) FROM outbox WHERE type = 'auth.user.registered'"
    )
    assert events == 1


async def test_an_admin_email_already_registered_in_another_case_is_not_created_again(
    auth_settings: AuthSettings, auth_app: Any, auth_db: Any
) -> None:
    assert auth_app is not None  # the database is emptied
    shouting = auth_settings.model_copy(update={"admin_email": auth_settings.admin_email.upper()})

    async with serve_in_process(create_app(auth_settings), base_url=BASE_URL):
        pass
    async with serve_in_process(create_app(shouting), base_url=BASE_URL):
        pass

    assert await auth_db.fetchval("SELECT count(*) FROM user_account") == 1


async def test_a_new_client_secret_in_the_settings_replaces_the_old_one_on_restart(
    client: httpx.AsyncClient, auth_settings: AuthSettings, auth_db: Any
) -> None:
    old_secret = orders_secret(auth_settings)
    old_digest = await auth_db.fetchval(
        "SELECT secret_hash FROM service_client WHERE client_id = 'orders'"
    )
    new_secret = "a-rotated-orders-secret-for-tests"
    rotated = auth_settings.model_copy(
        update={
            "clients": (
                ClientConfig(
                    client_id="orders", secret=SecretStr(new_secret), scopes=("catalog:reserve",)
                ),
            )
        }
    )

    async with serve_in_process(create_app(rotated), base_url=BASE_URL) as restarted:
        with_new = await client_token(restarted, "orders", new_secret)
        with_old = await client_token(restarted, "orders", old_secret)

    assert with_new.status_code == 200, with_new.text
    assert with_old.status_code == 401, with_old.text
    assert with_old.json()["error"] == "invalid_client"
    new_digest = await auth_db.fetchval(
        "SELECT secret_hash FROM service_client WHERE client_id = 'orders'"
    )
    assert new_digest != old_digest
    assert new_secret not in new_digest
    # The first app, still running, reads the same table: the old secret is refused there too.
    assert (await client_token(client, "orders", old_secret)).status_code == 401


async def test_new_scopes_in_the_settings_reach_the_client_on_restart(
    client: httpx.AsyncClient, auth_settings: AuthSettings
) -> None:
    secret = orders_secret(auth_settings)
    wider = auth_settings.model_copy(
        update={
            "clients": (
                ClientConfig(
                    client_id="orders",
                    secret=SecretStr(secret),
                    scopes=("catalog:reserve", "catalog:read"),
                ),
            )
        }
    )

    async with serve_in_process(create_app(wider), base_url=BASE_URL) as restarted:
        response = await client_token(restarted, "orders", secret)

    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == {"catalog:reserve", "catalog:read"}


async def test_a_second_start_keeps_the_signing_key_so_earlier_tokens_still_verify(
    client: httpx.AsyncClient, login: Login, auth_settings: AuthSettings
) -> None:
    first = await login(auth_settings.admin_email, auth_settings.admin_password.get_secret_value())
    access = first.json()["access_token"]

    async with serve_in_process(create_app(auth_settings), base_url=BASE_URL) as restarted:
        me = await restarted.get("/v1/users/me", headers={"Authorization": f"Bearer {access}"})

    assert me.status_code == 200, me.text
    assert me.json()["email"] == auth_settings.admin_email
