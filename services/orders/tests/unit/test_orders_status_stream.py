"""A status stream's pace with fake reads and notices: reads only when something may have
changed, keep-alives on time however often it is woken, an outage waited out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from uuid import UUID

import pytest

from bazaar.orders.domain.errors import OrderNotFound
from bazaar.orders.domain.model import Order, OrderLine, OrderStatus
from bazaar.orders.service.watch import (
    KEEP_ALIVE,
    OrderStream,
    OrderStreams,
    OrderVersion,
    StreamPolicy,
)
from bazaar.shared.notify import Watch

POLICY = StreamPolicy(keepalive_seconds=0.2, retry_seconds=0.05)


@dataclass
class FakeFeed:
    """Watches by key; `notify` wakes them as the change feed does."""

    watches: list[Watch] = field(default_factory=list)

    def watch(self, key: str) -> Watch:
        watch = Watch(None, key)
        self.watches.append(watch)
        return watch

    def notify(self, version: int) -> None:
        for watch in self.watches:
            watch.position = max(watch.position, version)
            watch.wake.set()

    def open_watches(self) -> int:
        return sum(not watch.closed for watch in self.watches)


@dataclass
class FakeSnapshots:
    """One order and its version; `failures` are raised by the next reads first."""

    current: OrderVersion
    failures: list[Exception] = field(default_factory=list)
    reads: int = 0

    async def read(self, order_id: UUID) -> OrderVersion | None:
        self.reads += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.current if order_id == self.current.order.id else None

    def change(self, **fields: object) -> None:
        order = replace(self.current.order, **fields)  # type: ignore[arg-type]
        self.current = OrderVersion(order, self.current.version + 1)


def _order(customer_id: str = "alice") -> Order:
    now = datetime.now(UTC)
    return Order(
        id=uuid.uuid4(),
        customer_id=customer_id,
        status=OrderStatus.CONFIRMED,
        lines=(OrderLine(uuid.uuid4(), 1),),
        created_at=now,
        updated_at=now,
    )


async def _next(events: AsyncGenerator[OrderVersion | None, None]) -> OrderVersion | None:
    async with asyncio.timeout(2):
        return await anext(events)


async def _open(
    feed: FakeFeed, snapshots: FakeSnapshots, last_seen: int | None = None
) -> OrderStream:
    streams = OrderStreams(feed, snapshots, POLICY)
    stream = await streams.open(snapshots.current.order.id, viewer="alice", last_seen=last_seen)
    assert stream is not None
    return stream


async def test_a_notice_of_a_version_already_sent_reads_nothing() -> None:
    feed, snapshots = FakeFeed(), FakeSnapshots(OrderVersion(_order(), 3))
    stream = await _open(feed, snapshots)
    events = stream.events()
    assert await _next(events) == snapshots.current
    assert snapshots.reads == 1

    feed.notify(3)  # the read that opened the stream saw it already
    assert await _next(events) is KEEP_ALIVE
    assert snapshots.reads == 1

    snapshots.change(status=OrderStatus.CANCELLED)
    feed.notify(4)
    changed = await _next(events)
    assert changed is not None and changed.version == 4
    assert snapshots.reads == 2
    await events.aclose()
    assert feed.open_watches() == 0


async def test_keep_alives_come_on_time_however_often_the_stream_is_woken() -> None:
    feed, snapshots = FakeFeed(), FakeSnapshots(OrderVersion(_order(), 1))
    stream = await _open(feed, snapshots)
    events = stream.events()
    await _next(events)

    async def wake_often() -> None:
        while True:
            feed.notify(1)
            await asyncio.sleep(0.02)

    waker = asyncio.create_task(wake_often())
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3):
            assert await _next(events) is KEEP_ALIVE
        elapsed = loop.time() - started
    finally:
        waker.cancel()
        await events.aclose()
    assert 0.5 < elapsed < 0.9, elapsed


async def test_a_read_cut_by_an_outage_is_tried_again_and_the_change_still_arrives() -> None:
    feed, snapshots = FakeFeed(), FakeSnapshots(OrderVersion(_order(), 1))
    stream = await _open(feed, snapshots)
    events = stream.events()
    await _next(events)

    snapshots.failures = [ConnectionRefusedError("database restarting")] * 2
    snapshots.change(status=OrderStatus.CANCELLED)
    feed.notify(2)
    changed = await _next(events)

    assert changed is not None and changed.order.status is OrderStatus.CANCELLED
    assert snapshots.reads == 4  # the open, two failures, the read that worked
    await events.aclose()


async def test_an_error_that_is_not_an_outage_ends_the_stream_with_it() -> None:
    feed, snapshots = FakeFeed(), FakeSnapshots(OrderVersion(_order(), 1))
    stream = await _open(feed, snapshots)
    events = stream.events()
    await _next(events)

    snapshots.failures = [ValueError("a bug")]
    feed.notify(2)
    with pytest.raises(ValueError, match="a bug"):
        await _next(events)
    assert feed.open_watches() == 0


async def test_a_final_state_is_the_last_event() -> None:
    feed, snapshots = FakeFeed(), FakeSnapshots(OrderVersion(_order(), 1))
    stream = await _open(feed, snapshots)
    events = stream.events()
    await _next(events)

    snapshots.change(status=OrderStatus.CANCELLED, stock_released=True)
    feed.notify(2)
    final = await _next(events)
    assert final is not None and final.order.stock_released
    with pytest.raises(StopAsyncIteration):
        await _next(events)
    assert feed.open_watches() == 0


async def test_a_closed_watch_ends_the_stream_without_another_event() -> None:
    feed, snapshots = FakeFeed(), FakeSnapshots(OrderVersion(_order(), 1))
    stream = await _open(feed, snapshots)
    events = stream.events()
    await _next(events)

    feed.watches[0].close()  # the process stops
    with pytest.raises(StopAsyncIteration):
        await _next(events)


async def test_opening_another_customers_order_fails_and_leaves_no_watch() -> None:
    feed, snapshots = FakeFeed(), FakeSnapshots(OrderVersion(_order("alice"), 1))
    streams = OrderStreams(feed, snapshots, POLICY)

    with pytest.raises(OrderNotFound):
        await streams.open(snapshots.current.order.id, viewer="mallory", last_seen=None)
    admin = await streams.open(snapshots.current.order.id, viewer=None, last_seen=None)

    assert admin is not None
    assert feed.open_watches() == 1  # the admin's alone


@pytest.mark.parametrize(
    ("last_seen", "sent_at_once"), [(None, True), (1, True), (2, False), (9, True)]
)
async def test_what_is_sent_at_once_depends_on_the_last_cursor_the_client_got(
    last_seen: int | None, sent_at_once: bool
) -> None:
    feed, snapshots = FakeFeed(), FakeSnapshots(OrderVersion(_order(), 2))
    stream = await _open(feed, snapshots, last_seen=last_seen)
    events = stream.events()

    first = await _next(events)

    assert (first is not KEEP_ALIVE) is sent_at_once
    await events.aclose()


async def test_a_client_that_saw_the_final_state_gets_no_stream() -> None:
    order = replace(_order(), status=OrderStatus.REJECTED, reject_reason="insufficient-stock")
    feed, snapshots = FakeFeed(), FakeSnapshots(OrderVersion(order, 2))
    streams = OrderStreams(feed, snapshots, POLICY)

    assert await streams.open(order.id, viewer="alice", last_seen=2) is None
    assert await streams.open(order.id, viewer="alice", last_seen=1) is not None
    assert feed.open_watches() == 1
