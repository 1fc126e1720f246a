"""The transactional outbox against a real PostgreSQL: CloudEvents rows, trace, NOTIFY, order."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from bazaar.shared.db import Database
from bazaar.shared.outbox import OUTBOX_CHANNEL, OUTBOX_DDL, Outbox, add_event
from bazaar.shared.telemetry import setup_tracing
from bazaar.shared.testing.postgres import DatabaseFactory, open_emptied

SOURCE = "/bazaar/widgets"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
QUIET = 0.2


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create("outbox", ddl=OUTBOX_DDL)


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_emptied(database_url, "outbox", max_size=2) as database:
        yield database


@pytest_asyncio.fixture
async def notifications(database_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    """What a relay LISTENing on the outbox channel receives."""
    queue: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(_conn: object, _pid: int, channel: str, _payload: str) -> None:
        queue.put_nowait(channel)

    listener = await asyncpg.connect(database_url)
    await listener.add_listener(OUTBOX_CHANNEL, on_notify)
    try:
        yield queue
    finally:
        await listener.remove_listener(OUTBOX_CHANNEL, on_notify)
        await listener.close()


async def rows(db: Database) -> list[asyncpg.Record]:
    async with db.connection() as conn:
        return list(await conn.fetch("SELECT * FROM outbox ORDER BY position"))


async def assert_quiet(queue: asyncio.Queue[str]) -> None:
    await asyncio.sleep(QUIET)
    assert queue.empty()


async def test_add_event_writes_one_cloudevent_row_in_the_transaction(db: Database) -> None:
    product_id = uuid.uuid4()
    changed_at = datetime(2026, 11, 21, 9, 30, 15, 123000, tzinfo=UTC)

    async with db.transaction() as conn:
        returned = await add_event(
            conn,
            source=SOURCE,
            type="catalog.product.updated",
            subject=str(product_id),
            data={
                "product_id": product_id,
                "changed_at": changed_at,
                "price": Decimal("19.99"),
                "changed": ["price_cents"],
            },
        )

    [row] = await rows(db)
    event = row["event"]
    assert isinstance(event, dict)
    assert event == returned
    assert event["specversion"] == "1.0"
    assert uuid.UUID(event["id"]) == row["id"]
    assert event["source"] == SOURCE
    assert event["type"] == "catalog.product.updated" == row["type"]
    assert event["subject"] == str(product_id) == row["subject"]
    assert event["datacontenttype"] == "application/json"
    assert RFC3339_UTC.match(event["time"]), event["time"]
    assert abs((datetime.now(UTC) - datetime.fromisoformat(event["time"])).total_seconds()) < 60
    data = event["data"]
    assert data["product_id"] == str(product_id)
    assert isinstance(data["changed_at"], str)
    assert datetime.fromisoformat(data["changed_at"]) == changed_at
    assert data["price"] == "19.99"
    assert data["changed"] == ["price_cents"]
    assert row["published_at"] is None
    assert row["attempts"] == 0


async def test_each_event_gets_its_own_uuid(db: Database) -> None:
    async with db.transaction() as conn:
        for n in range(3):
            await add_event(conn, source=SOURCE, type="t.e.st", subject=str(n), data={})

    ids = [row["event"]["id"] for row in await rows(db)]
    assert len(set(ids)) == 3
    assert all(uuid.UUID(i).version == 4 for i in ids)


async def test_add_event_outside_a_transaction_raises_and_writes_nothing(db: Database) -> None:
    async with db.connection() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await add_event(conn, source=SOURCE, type="t.e.st", subject="s", data={})

    assert await rows(db) == []


async def test_a_rolled_back_transaction_leaves_no_row_and_no_notification(
    db: Database, notifications: asyncio.Queue[str]
) -> None:
    with pytest.raises(Boom):
        async with db.transaction() as conn:
            await add_event(conn, source=SOURCE, type="t.e.st", subject="s", data={"n": 1})
            raise Boom

    assert await rows(db) == []
    await assert_quiet(notifications)


async def test_an_event_written_inside_a_span_carries_its_traceparent(db: Database) -> None:
    tracer = setup_tracing("test", "0", None).get_tracer("test_outbox")

    with tracer.start_as_current_span("place order") as span:
        context = span.get_span_context()
        async with db.transaction() as conn:
            event = await add_event(conn, source=SOURCE, type="t.e.st", subject="s", data={})

    [row] = await rows(db)
    match = TRACEPARENT.match(row["event"]["traceparent"])
    assert match, row["event"]["traceparent"]
    assert match[1] == format(context.trace_id, "032x")
    assert match[2] == format(context.span_id, "016x")
    assert row["traceparent"] == row["event"]["traceparent"] == event["traceparent"]


async def test_the_relay_is_notified_only_after_commit(
    db: Database, database_url: str, notifications: asyncio.Queue[str]
) -> None:
    async with db.transaction() as conn:
        await add_event(conn, source=SOURCE, type="t.e.st", subject="s", data={})
        # Another session cannot see the row yet, and the idle listener, which would be handed
        # a notification at once, must stay quiet until the commit.
        other = await asyncpg.connect(database_url)
        try:
            assert await other.fetchval("SELECT count(*) FROM outbox") == 0
        finally:
            await other.close()
        await assert_quiet(notifications)

    channel = await asyncio.wait_for(notifications.get(), timeout=5)
    assert channel == OUTBOX_CHANNEL


async def test_rows_keep_creation_order_by_position(db: Database) -> None:
    subjects = [f"s-{n}" for n in range(5)]
    async with db.transaction() as conn:
        for subject in subjects[:3]:
            await add_event(conn, source=SOURCE, type="t.e.st", subject=subject, data={})
    for subject in subjects[3:]:
        async with db.transaction() as conn:
            await add_event(conn, source=SOURCE, type="t.e.st", subject=subject, data={})

    found = await rows(db)
    assert [row["subject"] for row in found] == subjects
    positions = [row["position"] for row in found]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)


async def test_the_outbox_binds_a_source_to_one_transaction(db: Database) -> None:
    async with db.transaction() as conn:
        outbox = Outbox(conn, source=SOURCE)
        event: dict[str, Any] = await outbox.add(
            "orders.order.placed", subject="order-1", data={"order_id": "order-1"}
        )

    [row] = await rows(db)
    assert row["event"] == event
    assert event["source"] == SOURCE
    assert event["type"] == "orders.order.placed"
    assert event["data"] == {"order_id": "order-1"}
