"""After the soak: settle, then count what was lost, duplicated, oversold, stuck, held or unannounced.

Everything is read from the services' own tables (read-only transactions) and from an outside
durable queue bound to `bazaar.events` (every routing key) before the load began.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import aio_pika
import asyncpg
from chaos_load import Load
from chaos_rules import (
    Verdict,
    duplicated,
    ever_confirmed,
    lost,
    missing_events,
    oversold,
    still_holding,
    unexpected,
    unreleased,
)

from bazaar.shared.messaging.topology import declare_exchange

#: Every order of the soak's customers (not one per key: duplicates must show).
ORDERS_SQL = """SELECT id::text, customer_id, status, lines, idempotency_key, stock_released,
release_pending FROM customer_order WHERE customer_id = ANY($1::text[])"""
PRODUCTS_SQL = "SELECT id::text, stock FROM product WHERE id = ANY($1::uuid[])"
RESERVATIONS_SQL = """SELECT r.id::text, r.order_id::text, r.status, l.product_id::text, l.quantity
FROM reservation r JOIN reservation_line l ON l.reservation_id = r.id"""


class EventTap:
    """An outside subscriber: a durable quorum queue bound to every event type."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.seen: set[tuple[str, str]] = set()  # (type, entity id)

    async def bind(self) -> None:
        """Declare the exchange (as the services do), the queue and its binding."""
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            exchange = await declare_exchange(channel)
            queue = await channel.declare_queue(
                self.name, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind(exchange, routing_key="#")

    async def drain(self, idle_seconds: float = 1.0) -> None:
        """Take every event waiting in the queue (and those arriving meanwhile)."""
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1000)
            queue = await channel.get_queue(self.name)
            async with queue.iterator() as messages:
                while True:
                    try:
                        async with asyncio.timeout(idle_seconds):
                            message = await anext(messages)
                    except TimeoutError:
                        return
                    self._note(json.loads(message.body))
                    await message.ack()

    def _note(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        kind = str(event.get("type"))
        if kind == "orders.order.placed":
            self.seen.add((kind, str(data.get("id"))))
        elif kind.startswith("catalog.stock."):
            self.seen.add((kind, str(data.get("reservation_id"))))
        else:
            self.seen.add((kind, str(data.get("order_id", event.get("subject")))))

    async def delete(self) -> None:
        """Remove the queue (local infrastructure only; a private broker just goes)."""
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(self.name)


async def _read(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction(readonly=True):
            return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


async def _holding(dsns: dict[str, str], customers: list[str]) -> list[str]:
    orders = {r["id"]: r for r in await _read(dsns["orders"], ORDERS_SQL, customers)}
    return still_holding(orders, await _read(dsns["catalog"], RESERVATIONS_SQL))


async def settle(
    dsns: dict[str, str], tap: EventTap, customers: list[str], seconds: float
) -> float:
    """Wait until no order is pending or holding stock it gave up (at most `seconds`)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if not await _holding(dsns, customers):
            break
        await tap.drain(0.2)
        await asyncio.sleep(1)
    return time.monotonic() - start


async def check(
    load: Load, dsns: dict[str, str], initial: dict[str, int], tap: EventTap,
    events_wait: float,
) -> Verdict:  # fmt: skip
    """Count every invariant's violations from the databases and the tapped events."""
    verdict = Verdict()
    customers = sorted(set(load.keys.values()))
    rows = await _read(dsns["orders"], ORDERS_SQL, customers)
    by_id = {r["id"]: r for r in rows}
    verdict.orders = len(by_id)
    states = Counter(r["status"] for r in rows)
    verdict.states = " ".join(
        f"{s}={states[s]}" for s in ("confirmed", "rejected", "cancelled", "pending")
    )
    lost(load, by_id, verdict)
    duplicated(load, rows, verdict)
    pending = [r["id"] for r in rows if r["status"] == "pending"]
    verdict.stuck_pending = len(pending)
    if pending:
        verdict.details.append(f"stuck pending: {pending[:5]}")
    reservations = await _read(dsns["catalog"], RESERVATIONS_SQL)
    stock = await _read(dsns["catalog"], PRODUCTS_SQL, list(initial))
    oversold(initial, stock, by_id, reservations, verdict)
    unreleased(by_id, reservations, verdict)
    unexpected(load, by_id, verdict)
    confirmed = ever_confirmed(load)
    deadline = time.monotonic() + events_wait
    while True:
        await tap.drain()
        missing = missing_events(by_id, reservations, tap.seen, confirmed)
        if not missing or time.monotonic() > deadline:
            break
    verdict.events_missing = len(missing)
    released = sum(1 for r in {(r["id"], r["status"]) for r in reservations} if r[1] == "released")
    verdict.checked = (
        f"checked {len(by_id)} orders ({dict(Counter(r['status'] for r in by_id.values()))}), "
        f"{released} released reservations, {len(tap.seen)} distinct events tapped"
    )
    if missing:
        verdict.details.append(f"events missing ({len(missing)}): {sorted(missing)[:5]}")
    return verdict
