"""Following one order: its state now, then each change, until a final state (status streams).

A stream waits on a `Watch` of the process's one change feed and holds no database
connection while it waits: it borrows one only to read the order when a notice (or a
reconnect of the feed) says the order may have changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from bazaar.orders.domain.errors import OrderNotFound
from bazaar.orders.domain.model import Order, OrderStatus
from bazaar.shared.errors import is_outage
from bazaar.shared.notify import Watch
from bazaar.shared.tasks import OutageLog, wait_at_most


@dataclass(frozen=True, slots=True)
class OrderVersion:
    """An order as it stands, and its version: a number that grows with each change."""

    order: Order
    version: int


class Snapshots(Protocol):
    """Reads an order with its version."""

    async def read(self, order_id: UUID) -> OrderVersion | None: ...


class Feed(Protocol):
    """Wakes the watches of an order when it changes."""

    def watch(self, key: str) -> Watch: ...


def is_final(order: Order) -> bool:
    """Whether a stream ends after this state: rejected, or cancelled with the stock back."""
    return order.status is OrderStatus.REJECTED or (
        order.status is OrderStatus.CANCELLED and order.stock_released
    )


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """The pace of a stream."""

    #: A waiting stream says so (a keep-alive) at least this often.
    keepalive_seconds: float
    #: After a failed read (the database out of reach) the next try comes this much later.
    retry_seconds: float = 1.0


#: What a stream yields when nothing changed for a while: the client's sign of life.
KEEP_ALIVE = None


class OrderStream:
    """One client's stream of an order: `events()` yields each new state, or KEEP_ALIVE."""

    def __init__(
        self,
        watch: Watch,
        current: OrderVersion,
        *,
        seen: int,
        snapshots: Snapshots,
        policy: StreamPolicy,
        outages: OutageLog,
    ) -> None:
        self._watch = watch
        self._current = current
        self._seen = seen
        self._snapshots = snapshots
        self._policy = policy
        self._outages = outages

    def close(self) -> None:
        """Stop watching the order (idempotent)."""
        self._watch.close()

    async def events(self) -> AsyncGenerator[OrderVersion | None, None]:
        """The order now (unless the client has seen it), then each change; ends after a final
        state or when the process stops. None is a keep-alive."""
        try:
            async for event in self._follow():
                yield event
        finally:
            self.close()

    async def _follow(self) -> AsyncGenerator[OrderVersion | None, None]:
        loop = asyncio.get_running_loop()
        watch, policy = self._watch, self._policy
        sent, current = self._seen, self._current
        written = loop.time()
        retry_at: float | None = None  # a read is due at this time
        while True:
            if current.version > sent:
                yield current
                sent, written = current.version, loop.time()
                if is_final(current.order):
                    return
            if watch.closed:
                return
            deadline = written + policy.keepalive_seconds
            if retry_at is not None:
                deadline = min(deadline, retry_at)
            if await wait_at_most(watch.wake, max(0.0, deadline - loop.time())):
                if watch.closed:
                    return
                watch.wake.clear()
                if watch.unseen(sent):
                    retry_at = loop.time()
            if retry_at is not None and loop.time() >= retry_at:
                try:
                    read = await self._snapshots.read(current.order.id)
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    self._outages.record(exc)
                    retry_at = loop.time() + policy.retry_seconds
                else:
                    self._outages.end()
                    if read is None:  # orders are never deleted: nothing more to tell
                        return
                    current, retry_at = read, None
                    if watch.position > current.version:
                        # A notice named a newer version than the read saw: look once more.
                        retry_at = loop.time() + policy.retry_seconds
                    continue
            if loop.time() >= written + policy.keepalive_seconds:
                yield KEEP_ALIVE
                written = loop.time()


class OrderStreams:
    """Opens status streams: one change feed for the process; a stream reads its order when
    woken (the reader puts the reads woken together in one statement)."""

    def __init__(self, feed: Feed, snapshots: Snapshots, policy: StreamPolicy) -> None:
        self._feed = feed
        self._snapshots = snapshots
        self._policy = policy
        self._outages = OutageLog("order status streams")

    async def open(
        self, order_id: UUID, *, viewer: str | None, last_seen: int | None
    ) -> OrderStream | None:
        """A stream of the order if `viewer` owns it (None: an admin), or None when the client
        has seen its final state already (`last_seen`, the last cursor it got)."""
        # Watching starts before the read: a change committed after the read wakes the stream.
        watch = self._feed.watch(str(order_id))
        try:
            current = await self._snapshots.read(order_id)
            if current is None or (viewer is not None and current.order.customer_id != viewer):
                raise OrderNotFound(f"Order {order_id} does not exist.")
            # A cursor this order never had (another order's, a later one) counts as none.
            seen = last_seen if last_seen is not None and last_seen <= current.version else 0
            if seen == current.version and is_final(current.order):
                watch.close()
                return None
        except BaseException:
            watch.close()
            raise
        return OrderStream(
            watch,
            current,
            seen=seen,
            snapshots=self._snapshots,
            policy=self._policy,
            outages=self._outages,
        )
