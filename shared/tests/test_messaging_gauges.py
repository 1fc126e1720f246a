"""The gauges operators are woken by: outbox lag while nothing publishes, and queue depths."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from bazaar.shared.db import Database
from bazaar.shared.messaging import (
    ConsumerSettings,
    Messaging,
    MessagingSettings,
    RelaySettings,
    Subscription,
)
from bazaar.shared.messaging.topology import (
    EVENTS_EXCHANGE,
    PUBLISHED_ONLY_TYPES,
    UNROUTED,
    UNSUBSCRIBED,
)
from bazaar.shared.outbox import add_event
from bazaar.shared.testing.amqp import eventually
from bazaar.shared.testing.chaos import ChaosProxy, Mode, chaos_proxy
from bazaar.shared.testing.private import free_port

EFFECT_DDL = "CREATE TABLE effect (event_id text NOT NULL)"
#: The gauges' refresh in these tests (15 s and 5 s by default).
REFRESH = 0.2


async def apply(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    await conn.execute("INSERT INTO effect (event_id) VALUES ($1)", event["id"])


def make_messaging(
    db: Database, url: str, *, events: tuple[str, ...] = (), publish_timeout: float = 10.0
) -> Messaging:
    return Messaging(
        MessagingSettings(
            url=url,
            relay=RelaySettings(
                poll_seconds=0.1, publish_timeout=publish_timeout, lag_seconds=REFRESH
            ),
            consumer=ConsumerSettings(retry_delays_ms=(50,)),
            drain_seconds=2.0,
            queue_depth_seconds=REFRESH,
        ),
        service=f"t{uuid.uuid4().hex[:10]}",
        db=db,
        registry=CollectorRegistry(),
        subscriptions=[Subscription("gauged", events, apply)] if events else [],
    )


def sample(messaging: Messaging, name: str, **labels: str) -> float | None:
    """The sample's value, None when the series does not exist."""
    return messaging.metrics.registry.get_sample_value(name, labels)


async def emit(db: Database, type: str, count: int = 1) -> None:
    for seq in range(count):
        async with db.transaction() as conn:
            await add_event(conn, source="/bazaar/test", type=type, subject=str(seq), data={})


def unique_type() -> str:
    return f"test.gauged.{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture
async def broker_proxy(amqp_url: str) -> AsyncIterator[ChaosProxy]:
    """A chaos proxy in front of the run's broker (its URL: `through(amqp_url, proxy)`)."""
    parts = urlsplit(amqp_url)
    async with chaos_proxy(f"http://{parts.hostname}:{parts.port or 5672}") as proxy:
        yield proxy


def through(amqp_url: str, proxy: ChaosProxy) -> str:
    parts = urlsplit(amqp_url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def lag_grows(messaging: Messaging, *, past: float) -> list[float]:
    """Read the lag until it passed `past` seconds; every reading, in order."""
    readings: list[float] = []

    async def grown() -> bool:
        readings.append(messaging.metrics.value("bazaar_outbox_lag_seconds"))
        return readings[-1] >= past

    await eventually(grown, within=past + 5)
    return readings


async def test_the_outbox_lag_grows_while_the_broker_cannot_be_reached_at_all(
    db: Database,
) -> None:
    # Nothing listens there: the relay never connects, so no relay pass ever runs.
    messaging = make_messaging(db, f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    async with messaging.running():
        await emit(db, unique_type())
        readings = await lag_grows(messaging, past=1.5)
        assert not await messaging.ready()
    assert readings == sorted(readings)


async def test_the_outbox_lag_grows_while_a_relay_pass_waits_on_a_silent_broker(
    db: Database, amqp_url: str, broker_proxy: ChaosProxy
) -> None:
    kind = unique_type()
    messaging = make_messaging(db, through(amqp_url, broker_proxy), publish_timeout=60.0)
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        await emit(db, kind)

        async def published() -> bool:
            return messaging.metrics.value("bazaar_events_published_total", type=kind) == 1

        await eventually(published)
        await eventually(lambda: _lag_is(messaging, 0.0))
        # The broker freezes: the next pass publishes and waits for a confirm that never
        # comes (for a minute), the connection still looking alive.
        await broker_proxy.set_mode(Mode.STALL)
        try:
            await emit(db, kind)
            await lag_grows(messaging, past=1.5)
            # No pass ended meanwhile: nothing was confirmed, nothing failed.
            assert messaging.metrics.value("bazaar_events_published_total", type=kind) == 1
            assert (
                sum(
                    messaging.metrics.value("bazaar_events_publish_failures_total", reason=reason)
                    for reason in ("timeout", "connection", "nacked", "unroutable", "blocked")
                )
                == 0
            )
        finally:
            await broker_proxy.set_mode(Mode.FORWARD)
        await eventually(lambda: _published(messaging, kind, 2))


async def _lag_is(messaging: Messaging, value: float) -> bool:
    return messaging.metrics.value("bazaar_outbox_lag_seconds") == value


async def _published(messaging: Messaging, kind: str, count: int) -> bool:
    return messaging.metrics.value("bazaar_events_published_total", type=kind) == count


async def test_a_parked_message_shows_in_its_parking_queue_depth_within_the_refresh(
    db: Database, amqp_url: str
) -> None:
    kind = unique_type()
    messaging = make_messaging(db, amqp_url, events=(kind,))
    consumer = messaging.consumers[0].queue_name
    parking = f"{consumer}.parking"
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        await eventually(lambda: _depth_is(messaging, parking, 0.0))
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(EVENTS_EXCHANGE)
            await exchange.publish(aio_pika.Message(b"not json", message_id="junk"), kind)

        async def parked() -> bool:
            return messaging.metrics.value("bazaar_events_parked_total", consumer=consumer) == 1

        await eventually(parked)
        started = time.monotonic()
        await eventually(lambda: _depth_is(messaging, parking, 1.0), within=5)
        shown_after = time.monotonic() - started
    # A refresh, plus the time one takes on a busy machine.
    assert shown_after < REFRESH + 1.0


async def _depth_is(messaging: Messaging, queue: str, value: float) -> bool:
    return sample(messaging, "bazaar_queue_messages", queue=queue) == value


async def test_unroutable_events_grow_the_unrouted_depth(db: Database, amqp_url: str) -> None:
    messaging = make_messaging(db, amqp_url)
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)

        async def known() -> bool:
            return sample(messaging, "bazaar_queue_messages", queue=UNROUTED) is not None

        await eventually(known)
        # The run's vhost is shared: other suites keep their unrouted events there too, so
        # only the growth by this test's own events is asserted.
        before = messaging.metrics.value("bazaar_queue_messages", queue=UNROUTED)
        await emit(db, unique_type(), count=3)

        async def grown() -> bool:
            return messaging.metrics.value("bazaar_queue_messages", queue=UNROUTED) >= before + 3

        await eventually(grown)


async def test_events_nobody_in_the_suite_consumes_grow_the_unsubscribed_depth(
    db: Database, amqp_url: str
) -> None:
    messaging = make_messaging(db, amqp_url)
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)

        async def known() -> bool:
            return sample(messaging, "bazaar_queue_messages", queue=UNSUBSCRIBED) is not None

        await eventually(known)
        # The run's vhost is shared: only the growth by this test's own events is asserted.
        before = messaging.metrics.value("bazaar_queue_messages", queue=UNSUBSCRIBED)
        await emit(db, PUBLISHED_ONLY_TYPES[0], count=3)

        async def grown() -> bool:
            depth = messaging.metrics.value("bazaar_queue_messages", queue=UNSUBSCRIBED)
            return depth >= before + 3

        await eventually(grown)


async def test_queue_depths_are_absent_while_the_broker_cannot_be_asked_and_said_once(
    db: Database, amqp_url: str, broker_proxy: ChaosProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bazaar.messaging.depth")
    kind = unique_type()
    messaging = make_messaging(db, through(amqp_url, broker_proxy), events=(kind,))
    parking = f"{messaging.consumers[0].queue_name}.parking"
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        await eventually(lambda: _depth_is(messaging, parking, 0.0))
        await broker_proxy.set_mode(Mode.REFUSE)

        async def absent() -> bool:
            return not any(
                sample(messaging, "bazaar_queue_messages", queue=queue) is not None
                for queue in (parking, UNROUTED, UNSUBSCRIBED)
            )

        await eventually(absent)
        await asyncio.sleep(10 * REFRESH)  # many refreshes fail meanwhile
        said = [r for r in caplog.records if r.name == "bazaar.messaging.depth"]
        await broker_proxy.set_mode(Mode.FORWARD)
        await eventually(lambda: _depth_is(messaging, parking, 0.0))
    said_after = [r for r in caplog.records if r.name == "bazaar.messaging.depth"]
    # One line for the whole outage, no traceback; one when the depths are known again.
    assert [(r.levelno, r.exc_info) for r in said] == [(logging.WARNING, None)]
    assert said[0].getMessage().startswith("queue depth unknown")
    assert [r.getMessage() for r in said_after[1:]] == ["queue depth known again"]
