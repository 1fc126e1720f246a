"""The inbox: each consumer records the ids it applied, in the transaction that applied them."""

from __future__ import annotations

import asyncpg

from bazaar.shared.db import rows_affected

#: The inbox DDL as separate statements (Alembic's asyncpg driver runs one at a time).
PROCESSED_MESSAGE_DDL: tuple[str, ...] = (
    """
    CREATE TABLE processed_message (
        consumer text NOT NULL,
        message_id text NOT NULL,
        processed_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT processed_message_pkey PRIMARY KEY (consumer, message_id)
    )
    """,
    "CREATE INDEX processed_message_processed_at_idx ON processed_message (processed_at)",
)

PROCESSED_MESSAGE_DROP_DDL: tuple[str, ...] = ("DROP TABLE IF EXISTS processed_message",)

CLAIM = """
INSERT INTO processed_message (consumer, message_id) VALUES ($1, $2)
ON CONFLICT ON CONSTRAINT processed_message_pkey DO NOTHING
RETURNING 1
"""

PRUNE = "DELETE FROM processed_message WHERE processed_at < now() - make_interval(secs => $1)"


async def claim_message(conn: asyncpg.Connection, consumer: str, message_id: str) -> bool:
    """Record a message applied by `consumer` in the open transaction; False if it already was."""
    return await conn.fetchval(CLAIM, consumer, message_id) is not None


async def prune_processed(conn: asyncpg.Connection, older_than_seconds: float) -> int:
    """Forget applied ids older than the retention (far beyond any redelivery); return how many."""
    status: str = await conn.execute(PRUNE, older_than_seconds)
    return rows_affected(status)
