"""auth.user.registered: written to the outbox in the registration's own transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

VALID = {"email": "ada@example.com", "password": "correct horse battery", "name": "Ada"}
REGISTERED = "auth.user.registered"


async def events(auth_db: Any) -> list[dict[str, Any]]:
    rows = await auth_db.fetch(
        "SELECT type, subject, event, published_at FROM outbox WHERE type = $1 ORDER BY position",
        REGISTERED,
    )
    return [dict(r) for r in rows]


async def test_a_registration_writes_one_registered_event_with_user_id_email_and_name(
    client: httpx.AsyncClient, auth_db: Any
) -> None:
    before = len(await events(auth_db))  # the bootstrap admin's

    response = await client.post("/v1/users", json=VALID)

    user = response.json()
    written = (await events(auth_db))[before:]
    assert len(written) == 1
    (row,) = written
    assert row["subject"] == user["id"]
    event = row["event"]
    assert event["type"] == REGISTERED
    assert event["specversion"] == "1.0"
    assert event["source"] == "/bazaar/auth"
    assert event["subject"] == user["id"]
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {"user_id": user["id"], "email": "ada@example.com", "name": "Ada"}
    assert "password" not in str(event) and VALID["password"] not in str(event)


async def test_each_registration_has_an_event_of_its_own_id(
    client: httpx.AsyncClient, auth_db: Any
) -> None:
    await client.post("/v1/users", json=VALID)
    await client.post("/v1/users", json={**VALID, "email": "bob@example.com", "name": "Bob"})

    ids = [row["event"]["id"] for row in await events(auth_db)]

    assert len(ids) == len(set(ids)) == 3  # the admin, Ada and Bob


async def test_a_refused_registration_writes_no_event(
    client: httpx.AsyncClient, auth_db: Any
) -> None:
    await client.post("/v1/users", json=VALID)
    before = await events(auth_db)

    duplicate = await client.post("/v1/users", json={**VALID, "email": "ADA@example.com"})
    invalid = await client.post("/v1/users", json={**VALID, "password": "short"})

    assert (duplicate.status_code, invalid.status_code) == (409, 422)
    assert await events(auth_db) == before


@pytest_asyncio.fixture
async def outbox_refuses_registrations(auth_db: Any) -> AsyncIterator[None]:
    """Make writing auth.user.registered fail, as a full disk or a broken outbox would."""
    await auth_db.execute(
        "ALTER TABLE outbox ADD CONSTRAINT test_refuse_registered"
        f" CHECK (type <> '{REGISTERED}') NOT VALID"
    )
    try:
        yield
    finally:
        await auth_db.execute("ALTER TABLE outbox DROP CONSTRAINT test_refuse_registered")


async def test_a_registration_whose_event_cannot_be_written_stores_no_user(
    client: httpx.AsyncClient,
    auth_db: Any,
    outbox_refuses_registrations: None,
) -> None:
    users = await auth_db.fetchval("SELECT count(*) FROM user_account")

    response = await client.post("/v1/users", json=VALID)

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "outbox" not in response.text and "test_refuse_registered" not in response.text
    assert await auth_db.fetchval("SELECT count(*) FROM user_account") == users


async def test_concurrent_registrations_of_one_email_in_any_case_create_one_user_and_one_event(
    client: httpx.AsyncClient, auth_db: Any
) -> None:
    before = len(await events(auth_db))
    emails = ["ada@example.com", "ADA@example.com", "Ada@Example.com", "ada@EXAMPLE.COM"] * 2

    responses = await asyncio.gather(
        *(client.post("/v1/users", json={**VALID, "email": email}) for email in emails)
    )

    assert sorted(r.status_code for r in responses) == [201] + [409] * (len(emails) - 1)
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["type"].endswith("/conflict")
    count = "SELECT count(*) FROM user_account WHERE lower(email) = 'ada@example.com'"
    assert await auth_db.fetchval(count) == 1
    assert len(await events(auth_db)) == before + 1
