"""The transactional outbox: events are written in the caller's transaction, published later."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from bazaar.shared.events import make_event

#: The relay LISTENs on this channel; a trigger notifies it when a transaction adds events.
OUTBOX_CHANNEL = "bazaar_outbox"

#: The outbox DDL as separate statements: Alembic's asyncpg driver runs one command at a time.
OUTBOX_DDL: tuple[str, ...] = (
    """
    CREATE TABLE outbox (
        id uuid PRIMARY KEY,
        position bigint GENERATED ALWAYS AS IDENTITY,
        type text NOT NULL,
        subject text NOT NULL,
        event jsonb NOT NULL,
        traceparent text,
        created_at timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz,
        attempts integer NOT NULL DEFAULT 0,
        last_error text,
        CONSTRAINT outbox_position_key UNIQUE (position)
    )
    """,
    "CREATE INDEX outbox_unpublished_idx ON outbox (position) WHERE published_at IS NULL",
    f"""
    CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{OUTBOX_CHANNEL}', '');
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()
    """,
)

OUTBOX_DROP_DDL: tuple[str, ...] = (
    "DROP TRIGGER IF EXISTS outbox_notify ON outbox",
    "DROP FUNCTION IF EXISTS outbox_notify()",
    "DROP TABLE IF EXISTS outbox",
)

INSERT_EVENT = """
INSERT INTO outbox (id, type, subject, event, traceparent)
VALUES ($1, $2, $3, $4, $5)
"""


async def add_event(
    conn: asyncpg.Connection, *, source: str, type: str, subject: str, data: Any
) -> dict[str, Any]:
    """Write one event to the outbox inside the caller's open transaction; return the event."""
    if not conn.is_in_transaction():
        raise RuntimeError("add_event must run inside the transaction that makes the change")
    event_id = uuid.uuid4()
    event = make_event(source=source, type=type, subject=subject, data=data, event_id=event_id)
    await conn.execute(INSERT_EVENT, event_id, type, subject, event, event.get("traceparent"))
    return event


class Outbox:
    """The outbox of one service bound to one open transaction."""

    def __init__(self, conn: asyncpg.Connection, *, source: str) -> None:
        self.conn = conn
        self.source = source

    async def add(self, type: str, *, subject: str, data: Any) -> dict[str, Any]:
        """Write one event in this transaction."""
        return await add_event(self.conn, source=self.source, type=type, subject=subject, data=data)
