"""The transactional outbox: events are written in the caller's transaction, published later."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


class HeldEvents:
    """Events added on one connection while held back: written by `with_held_events`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.rows: list[tuple[uuid.UUID, str, str, str, str | None]] = []
        self.holding = True

    def args(self) -> tuple[list[Any], ...]:
        """The parameters `with_held_events` numbers from its `first`: ids, types,
        subjects, events (JSON text), traceparents."""
        return tuple(list(column) for column in zip(*self.rows, strict=True))


_held: ContextVar[HeldEvents | None] = ContextVar("bazaar_outbox_held", default=None)


@contextmanager
def hold_events(conn: asyncpg.Connection) -> Iterator[HeldEvents]:
    """Hold back the events added on `conn` inside the block (one INSERT each, otherwise):
    the caller writes them with its next statement, built by `with_held_events`, in the
    same transaction, so they commit with it or not at all. Events added after the block
    (or on another connection) are written at once as always. Not for blocks that roll
    back a savepoint: an event held back would outlive the change it announces.
    """
    held = HeldEvents(conn)
    token = _held.set(held)
    try:
        yield held
    finally:
        held.holding = False
        _held.reset(token)


def with_held_events(sql: str, *, first: int) -> str:
    """`sql` (one statement) preceded by the INSERT of held events into the outbox, in one
    statement; the events' five array parameters are numbered from `$first`."""
    n = first
    return f"""WITH held_events AS (
    INSERT INTO outbox (id, type, subject, event, traceparent)
    SELECT e.id, e.type, e.subject, e.event::jsonb, e.traceparent
    FROM unnest(${n}::uuid[], ${n + 1}::text[], ${n + 2}::text[], ${n + 3}::text[],
                ${n + 4}::text[]) WITH ORDINALITY AS e(id, type, subject, event, traceparent, n)
    ORDER BY e.n
)
{sql}"""


async def add_event(
    conn: asyncpg.Connection, *, source: str, type: str, subject: str, data: Any
) -> dict[str, Any]:
    """Write one event to the outbox inside the caller's open transaction; return the event."""
    if not conn.is_in_transaction():
        raise RuntimeError("add_event must run inside the transaction that makes the change")
    event_id = uuid.uuid4()
    event = make_event(source=source, type=type, subject=subject, data=data, event_id=event_id)
    held = _held.get()
    if held is not None and held.holding and held.conn is conn:
        held.rows.append((event_id, type, subject, json.dumps(event), event.get("traceparent")))
        return event
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
