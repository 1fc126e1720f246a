"""A consumer process for the kill test: it stalls inside its handler until it is SIGKILLed.

Run as `python messaging_kill_worker.py DSN AMQP_URL SERVICE`; prints `started`, then
`in-handler` once the handler holds its transaction open with the effect written.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.messaging import Messaging, MessagingSettings, Subscription


async def stall(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO effect (event_id, seq) VALUES ($1, $2)", event["id"], event["data"]["seq"]
    )
    print("in-handler", flush=True)  # noqa: T201
    await asyncio.sleep(3600)


async def main(dsn: str, url: str, service: str) -> None:
    db = Database(PoolSettings(dsn=dsn, max_size=4))
    await db.open()
    messaging = Messaging(
        MessagingSettings(url=url),
        service=service,
        db=db,
        registry=CollectorRegistry(),
        subscriptions=[Subscription("widgets", ("test.widget.changed",), stall)],
    )
    async with messaging.running():
        await messaging.wait_started()
        print("started", flush=True)  # noqa: T201
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
