"""Events benchmark: outbox relay throughput, and commit-to-consumer latency at a steady rate.

    uv run python bench/events.py [--events 20000] [--rate 200] [--seconds 15]

Runs against the local PostgreSQL and RabbitMQ on 127.0.0.1, on a throwaway database and a
vhost of its own (both removed at the end). The relay and the consumer are the ones every
service runs (`bazaar.shared.messaging`), in this one process as they are in a service:

1. Relay throughput: `--events` rows already committed to the outbox, one queue bound;
   the relay publishes them with confirms and `mandatory` and marks them sent. Prints
   events/s from start to the last row marked.
2. End to end: a producer commits one event per transaction at `--rate` per second; a
   consumer (inbox row + handler in one transaction) records when the handler sees it.
   Prints p50/p95/p99/max from the producer's commit to the consumer's handler.

Prints figures; asserts nothing. Targets: >= 2,000 events/s, p99 <= 100 ms at 200/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.dbadmin import ensure_database
from bazaar.shared.messaging import (
    PROCESSED_MESSAGE_DDL,
    Broker,
    ConsumerSettings,
    Messaging,
    MessagingMetrics,
    MessagingSettings,
    OutboxRelay,
    RelaySettings,
    Subscription,
)
from bazaar.shared.outbox import OUTBOX_DDL, add_event
from bazaar.shared.telemetry import setup_tracing
from bazaar.shared.testing.amqp import LOCAL_AMQP, with_vhost
from bazaar.shared.testing.postgres import LOCAL_POSTGRES, with_database

THROUGHPUT_TYPE = "bench.relay.done"
LATENCY_TYPE = "bench.latency.done"


def rabbitmqctl(*args: str) -> None:
    """Run rabbitmqctl quietly (vhost set-up and clean-up)."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


async def fill_outbox(db: Database, count: int) -> None:
    """Commit `count` events, 500 per transaction."""
    for start in range(0, count, 500):
        async with db.transaction() as conn:
            for seq in range(start, min(count, start + 500)):
                await add_event(
                    conn,
                    source="/bazaar/bench",
                    type=THROUGHPUT_TYPE,
                    subject=str(seq),
                    data={"seq": seq, "payload": "x" * 200},
                )


async def pending(db: Database) -> bool:
    async with db.connection() as conn:
        return bool(
            await conn.fetchval("SELECT EXISTS (SELECT FROM outbox WHERE published_at IS NULL)")
        )


async def relay_throughput(db: Database, url: str, count: int, batch: int) -> float:
    """Events per second the relay publishes (confirmed and marked) from a full outbox."""
    import aio_pika

    from bazaar.shared.messaging.topology import declare_exchange

    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        exchange = await declare_exchange(channel)
        sink = await channel.declare_queue(
            "bench.sink", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await sink.bind(exchange, THROUGHPUT_TYPE)
        await fill_outbox(db, count)
        broker = Broker(url, name="bench-relay")
        await broker.connect()
        relay = OutboxRelay(
            db, broker, MessagingMetrics(CollectorRegistry()), RelaySettings(batch_size=batch)
        )
        started = time.perf_counter()
        task = asyncio.create_task(relay.run())
        while True:
            if not await pending(db):
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await broker.close()
        await sink.delete(if_unused=False, if_empty=False)
    return count / elapsed


async def end_to_end(db: Database, url: str, rate: float, seconds: float) -> list[float]:
    """Milliseconds from each producer commit to the consumer's handler."""
    committed: dict[str, float] = {}
    seen: dict[str, float] = {}

    async def record(_conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        seen.setdefault(event["id"], time.perf_counter())

    messaging = Messaging(
        MessagingSettings(url=url, consumer=ConsumerSettings(prefetch=64)),
        service="bench",
        db=db,
        registry=CollectorRegistry(),
        subscriptions=[Subscription("latency", (LATENCY_TYPE,), record)],
    )
    total = int(rate * seconds)
    async with messaging.running():
        await messaging.wait_started()
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        for seq in range(total):
            # Open loop: each event has its slot in the schedule, late or not.
            delay = start + seq / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            async with db.transaction() as conn:
                event = await add_event(
                    conn,
                    source="/bazaar/bench",
                    type=LATENCY_TYPE,
                    subject=str(seq),
                    data={"seq": seq},
                )
            committed[event["id"]] = time.perf_counter()
        deadline = time.perf_counter() + 30
        while True:
            if len(seen) >= total or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.05)
    lost = total - len(seen)
    if lost:
        print(f"  WARNING: {lost} events not seen within 30 s")
    return [(seen[i] - committed[i]) * 1000 for i in committed if i in seen]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    # Spans are recorded as in a service (no exporter unless OTEL_EXPORTER_OTLP_ENDPOINT).
    setup_tracing("bench-events", "0", os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))

    tag = f"{os.getpid()}{uuid.uuid4().hex[:6]}"
    database_url = with_database(LOCAL_POSTGRES, f"bazaar_bench_events_{tag}")
    vhost = f"bazaar-bench-events-{tag}"
    db = Database(PoolSettings(dsn=database_url, max_size=10))
    try:
        # Inside the try: whatever of the database and vhost was made is removed below.
        await ensure_database(database_url)
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        conn = await asyncpg.connect(database_url)
        for statement in (*OUTBOX_DDL, *PROCESSED_MESSAGE_DDL):
            await conn.execute(statement)
        await conn.close()
        await db.open()
        url = with_vhost(LOCAL_AMQP, vhost)

        print(f"relay throughput: {args.events} committed events, batches of {args.batch}")
        rate = await relay_throughput(db, url, args.events, args.batch)
        print(f"  {rate:,.0f} events/s published with confirms and marked sent")

        print(f"end to end: {args.rate:.0f} events/s for {args.seconds:.0f} s")
        latencies = await end_to_end(db, url, args.rate, args.seconds)
        print(
            f"  commit -> consumer: p50 {statistics.median(latencies):.1f} ms, "
            f"p95 {percentile(latencies, 95):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, "
            f"max {max(latencies):.1f} ms over {len(latencies)} events"
        )
    finally:
        await db.close()
        try:
            rabbitmqctl("delete_vhost", vhost)
        except subprocess.CalledProcessError as exc:  # never made, or the broker is away
            print(f"  (vhost {vhost} not deleted: {exc})", file=sys.stderr)
        admin = await asyncpg.connect(LOCAL_POSTGRES)
        await admin.execute(f'DROP DATABASE IF EXISTS "bazaar_bench_events_{tag}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
