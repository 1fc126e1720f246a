"""POST /v1/users: what a registration answers and stores, and every input it refuses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

VALID = {"email": "ada@example.com", "password": "correct horse battery", "name": "Ada"}
USER_FIELDS = {"id", "email", "name", "roles", "created_at"}


def with_(**changes: Any) -> dict[str, Any]:
    body = {**VALID, **changes}
    return {k: v for k, v in body.items() if v is not ...}


async def user_count(auth_db: Any) -> int:
    return int(await auth_db.fetchval("SELECT count(*) FROM user_account"))


async def test_a_registration_answers_201_with_the_user_and_its_location(
    client: httpx.AsyncClient, auth_db: Any
) -> None:
    before = datetime.now(UTC)

    response = await client.post("/v1/users", json=VALID)

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada"
    assert body["roles"] == ["customer"]
    assert response.headers["Location"] == f"/v1/users/{body['id']}"
    created_at = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
    assert created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= created_at <= datetime.now(UTC) + timedelta(seconds=5)
    stored = await auth_db.fetchrow("SELECT * FROM user_account WHERE id = $1::uuid", body["id"])
    assert stored is not None
    assert (stored["email"], stored["name"], list(stored["roles"])) == (
        "ada@example.com",
        "Ada",
        ["customer"],
    )


async def test_the_answer_never_carries_the_password_or_its_hash(
    client: httpx.AsyncClient, auth_db: Any
) -> None:
    response = await client.post("/v1/users", json=VALID)

    assert response.status_code == 201
    stored_hash = await auth_db.fetchval("SELECT password_hash FROM user_account")
    assert VALID["password"] not in response.text
    assert stored_hash not in response.text
    assert "argon2" not in response.text
    assert "password" not in response.text


async def test_an_email_already_used_answers_409_conflict_and_stores_nothing_more(
    client: httpx.AsyncClient,
    register: Callable[..., Awaitable[dict[str, Any]]],
    expect_problem: Callable[..., dict[str, Any]],
    auth_db: Any,
) -> None:
    await register()
    users = await user_count(auth_db)

    response = await client.post("/v1/users", json=with_(name="Someone Else"))

    expect_problem(response, 409, "conflict")
    assert await user_count(auth_db) == users


@pytest.mark.parametrize("email", ["ADA@Example.com", "Ada@EXAMPLE.COM", "ada@example.COM"])
async def test_an_email_used_in_another_case_answers_409_conflict(
    client: httpx.AsyncClient,
    register: Callable[..., Awaitable[dict[str, Any]]],
    expect_problem: Callable[..., dict[str, Any]],
    auth_db: Any,
    email: str,
) -> None:
    await register(email="ada@example.com")
    users = await user_count(auth_db)

    response = await client.post("/v1/users", json=with_(email=email))

    expect_problem(response, 409, "conflict")
    assert await user_count(auth_db) == users


@pytest.mark.parametrize("length", [12, 128])
async def test_passwords_of_12_and_128_characters_are_accepted(
    client: httpx.AsyncClient, length: int
) -> None:
    response = await client.post("/v1/users", json=with_(password="p" * length))

    assert response.status_code == 201, response.text


async def test_password_length_counts_characters_not_bytes(client: httpx.AsyncClient) -> None:
    # 12 characters, 24 bytes in UTF-8: long enough; 128 such characters are not too long.
    short_in_chars = await client.post("/v1/users", json=with_(password="é" * 12))
    long_in_bytes = await client.post(
        "/v1/users", json=with_(email="bob@example.com", password="é" * 128)
    )

    assert short_in_chars.status_code == 201, short_in_chars.text
    assert long_in_bytes.status_code == 201, long_in_bytes.text


@pytest.mark.parametrize("length", [0, 1, 11, 129, 1000])
async def test_a_password_shorter_than_12_or_longer_than_128_answers_422(
    client: httpx.AsyncClient,
    expect_problem: Callable[..., dict[str, Any]],
    auth_db: Any,
    length: int,
) -> None:
    response = await client.post("/v1/users", json=with_(password="p" * length))

    body = expect_problem(response, 422, "validation-error")
    assert any(error["loc"][-1] == "password" for error in body["errors"]), body
    assert await user_count(auth_db) == 1  # the bootstrap admin only


async def test_a_refused_password_is_not_echoed_in_the_answer(
    client: httpx.AsyncClient, expect_problem: Callable[..., dict[str, Any]]
) -> None:
    secret = "hunter2-xyz"  # 11 characters: refused

    response = await client.post("/v1/users", json=with_(password=secret))

    expect_problem(response, 422, "validation-error")
    assert secret not in response.text


def _address_of_length(length: int) -> str:
    """A well-formed address of exactly `length` characters (local part 64, labels <= 63)."""
    local = "l" * 64
    domain_length = length - len(local) - 1
    labels, left = [], domain_length - 4  # room for ".com"
    while left > 0:
        label = min(63, left)
        labels.append("d" * label)
        left -= label + 1
    domain = ".".join(labels)[: domain_length - 4] + ".com"
    address = f"{local}@{domain}"
    assert len(address) == length, len(address)
    return address


async def test_an_email_of_254_characters_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/users", json=with_(email=_address_of_length(254)))

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "email",
    [
        pytest.param("ada.example.com", id="no at sign"),
        pytest.param("ada @example.com", id="space in local part"),
        pytest.param("ada@exam ple.com", id="space in domain"),
        pytest.param(" ada@example.com", id="leading space"),
        pytest.param("ada@example.com ", id="trailing space"),
        pytest.param("ada@example.com\n", id="trailing newline"),
        pytest.param("ada@@example.com", id="two at signs together"),
        pytest.param("ada@home@example.com", id="two at signs apart"),
        pytest.param("ada@example", id="no dot in domain"),
        pytest.param("ada@", id="no domain"),
        pytest.param("@example.com", id="no local part"),
        pytest.param("", id="empty"),
        pytest.param("l" * 65 + "@example.com", id="local part over 64"),
        pytest.param(_address_of_length(255), id="255 characters"),
        pytest.param("a" * 300 + "@example.com", id="312 characters"),
    ],
)
async def test_a_bad_email_answers_422(
    client: httpx.AsyncClient,
    expect_problem: Callable[..., dict[str, Any]],
    auth_db: Any,
    email: str,
) -> None:
    response = await client.post("/v1/users", json=with_(email=email))

    body = expect_problem(response, 422, "validation-error")
    assert any(error["loc"][-1] == "email" for error in body["errors"]), body
    assert await user_count(auth_db) == 1  # the bootstrap admin only


async def test_names_of_1_and_200_characters_are_accepted(client: httpx.AsyncClient) -> None:
    one = await client.post("/v1/users", json=with_(name="A"))
    two_hundred = await client.post("/v1/users", json=with_(email="b@example.com", name="n" * 200))

    assert one.status_code == 201, one.text
    assert two_hundred.status_code == 201, two_hundred.text
    assert two_hundred.json()["name"] == "n" * 200


@pytest.mark.parametrize("name", ["", "n" * 201])
async def test_an_empty_name_or_one_of_201_characters_answers_422(
    client: httpx.AsyncClient, expect_problem: Callable[..., dict[str, Any]], name: str
) -> None:
    response = await client.post("/v1/users", json=with_(name=name))

    body = expect_problem(response, 422, "validation-error")
    assert any(error["loc"][-1] == "name" for error in body["errors"]), body


@pytest.mark.parametrize("missing", ["email", "password", "name"])
async def test_a_missing_field_answers_422(
    client: httpx.AsyncClient, expect_problem: Callable[..., dict[str, Any]], missing: str
) -> None:
    response = await client.post("/v1/users", json=with_(**{missing: ...}))

    body = expect_problem(response, 422, "validation-error")
    assert any(error["loc"][-1] == missing for error in body["errors"]), body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("roles", ["admin"]),
        ("roles", ["customer"]),
        ("id", "00000000-0000-0000-0000-000000000001"),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("password_hash", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA"),
    ],
)
async def test_an_extra_field_answers_422_naming_it(
    client: httpx.AsyncClient,
    expect_problem: Callable[..., dict[str, Any]],
    auth_db: Any,
    field: str,
    value: Any,
) -> None:
    response = await client.post("/v1/users", json=with_(**{field: value}))

    body = expect_problem(response, 422, "validation-error")
    assert any(error["loc"][-1] == field for error in body["errors"]), body
    assert await user_count(auth_db) == 1  # the bootstrap admin only


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"email": "ada@example.com",', id="truncated"),
        pytest.param(b"not json at all", id="not json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'["ada@example.com", "correct horse battery", "Ada"]', id="an array"),
        pytest.param(b"\xff\xfe{}", id="not utf-8"),
    ],
)
async def test_a_body_that_is_not_a_json_object_answers_422(
    client: httpx.AsyncClient, expect_problem: Callable[..., dict[str, Any]], content: bytes
) -> None:
    response = await client.post(
        "/v1/users", content=content, headers={"Content-Type": "application/json"}
    )

    expect_problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", 42), ("password", 123456789012345), ("name", None), ("name", ["Ada"])],
)
async def test_a_field_of_the_wrong_type_answers_422(
    client: httpx.AsyncClient,
    expect_problem: Callable[..., dict[str, Any]],
    field: str,
    value: Any,
) -> None:
    response = await client.post("/v1/users", json=with_(**{field: value}))

    body = expect_problem(response, 422, "validation-error")
    assert any(error["loc"][-1] == field for error in body["errors"]), body


async def test_a_registered_user_can_log_in_with_a_password_full_of_form_characters(
    client: httpx.AsyncClient, token: Callable[..., Awaitable[httpx.Response]]
) -> None:
    password = "pä&ss=wörd+% ünïcode ✓"
    response = await client.post("/v1/users", json=with_(password=password))
    assert response.status_code == 201, response.text

    login = await token(grant_type="password", username=VALID["email"], password=password)

    assert login.status_code == 200, login.text


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"email": "ada\x00@example.com"}, id="NUL in email"),
        pytest.param({"name": "Ada\x00"}, id="NUL in name"),
        pytest.param({"password": "correct horse\x00battery"}, id="NUL in password"),
    ],
)
async def test_a_nul_character_anywhere_answers_422_never_500(
    client: httpx.AsyncClient,
    expect_problem: Callable[..., dict[str, Any]],
    changes: dict[str, str],
) -> None:
    response = await client.post("/v1/users", json=with_(**changes))

    expect_problem(response, 422, "validation-error")
