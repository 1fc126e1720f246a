"""Passwords at rest: argon2id with OWASP's parameters, salted, and rehashed when they change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from argon2 import PasswordHasher, Type

PASSWORD = "correct horse battery"
OWASP_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"
Login = Callable[..., Awaitable[httpx.Response]]


async def stored_hash(auth_db: Any, email: str) -> str:
    value = await auth_db.fetchval(
        "SELECT password_hash FROM user_account WHERE lower(email) = lower($1)", email
    )
    assert isinstance(value, str)
    return value


async def test_a_registered_password_is_stored_as_argon2id_with_owasp_parameters(
    register: Callable[..., Awaitable[dict[str, Any]]], auth_db: Any
) -> None:
    await register(email="ada@example.com", password=PASSWORD)

    password_hash = await stored_hash(auth_db, "ada@example.com")

    assert password_hash.startswith(OWASP_PREFIX), password_hash
    assert PASSWORD not in password_hash
    assert PasswordHasher().verify(password_hash, PASSWORD)


async def test_the_same_password_is_salted_differently_for_two_users(
    register: Callable[..., Awaitable[dict[str, Any]]], auth_db: Any
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    await register(email="bob@example.com", password=PASSWORD, name="Bob")

    ada = await stored_hash(auth_db, "ada@example.com")
    bob = await stored_hash(auth_db, "bob@example.com")

    assert ada != bob
    assert ada.split("$")[4] != bob.split("$")[4]  # the salts


async def test_the_bootstrap_admin_password_is_stored_the_same_way(
    client: httpx.AsyncClient, auth_db: Any, auth_settings: Any
) -> None:
    password_hash = await stored_hash(auth_db, auth_settings.admin_email)

    assert password_hash.startswith(OWASP_PREFIX), password_hash
    assert auth_settings.admin_password.get_secret_value() not in password_hash


async def test_a_login_rehashes_a_password_stored_with_weaker_parameters(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Login, auth_db: Any
) -> None:
    user = await register(email="ada@example.com", password=PASSWORD)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID).hash(PASSWORD)
    await auth_db.execute(
        "UPDATE user_account SET password_hash = $2 WHERE id = $1::uuid", user["id"], weak
    )

    response = await login("ada@example.com", PASSWORD)

    assert response.status_code == 200, response.text
    rehashed = await stored_hash(auth_db, "ada@example.com")
    assert rehashed != weak
    assert rehashed.startswith(OWASP_PREFIX), rehashed
    assert PasswordHasher().verify(rehashed, PASSWORD)
    assert (await login("ada@example.com", PASSWORD)).status_code == 200


async def test_a_login_rehashes_an_argon2i_hash_as_argon2id(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Login, auth_db: Any
) -> None:
    user = await register(email="ada@example.com", password=PASSWORD)
    old = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.I).hash(PASSWORD)
    await auth_db.execute(
        "UPDATE user_account SET password_hash = $2 WHERE id = $1::uuid", user["id"], old
    )

    response = await login("ada@example.com", PASSWORD)

    assert response.status_code == 200, response.text
    assert (await stored_hash(auth_db, "ada@example.com")).startswith(OWASP_PREFIX)


async def test_a_failed_login_leaves_a_weak_hash_alone(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Login, auth_db: Any
) -> None:
    user = await register(email="ada@example.com", password=PASSWORD)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID).hash(PASSWORD)
    await auth_db.execute(
        "UPDATE user_account SET password_hash = $2 WHERE id = $1::uuid", user["id"], weak
    )

    response = await login("ada@example.com", "wrong horse battery")

    assert response.status_code == 400
    assert await stored_hash(auth_db, "ada@example.com") == weak


async def test_a_login_with_current_parameters_leaves_the_hash_unchanged(
    register: Callable[..., Awaitable[dict[str, Any]]], login: Login, auth_db: Any
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    before = await stored_hash(auth_db, "ada@example.com")

    assert (await login("ada@example.com", PASSWORD)).status_code == 200

    assert await stored_hash(auth_db, "ada@example.com") == before
