"""In-memory fakes of the ports in service/ports.py, for the use cases and the reconciler."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from bazaar.orders.domain.model import Order, OrderLine, PricedReservation, RequestedLine
from bazaar.orders.service.ports import (
    CatalogState,
    Invalid,
    OrderFilter,
    OutOfStock,
    PendingBacklog,
    Reserved,
    ReserveOutcome,
    Unavailable,
)


@dataclass
class MemoryOrders:
    """Orders in a dict; `claim_due` leases the orders the reconciler must look at.

    A lease holds until `end_leases()` (a test calls it between reconciler rounds, as if the
    leases had run out): within one round an order is handed out once.
    """

    rows: dict[UUID, Order] = field(default_factory=dict)
    keys: dict[tuple[str, str], UUID] = field(default_factory=dict)
    claims: list[dict[str, Any]] = field(default_factory=list)
    locked: list[UUID] = field(default_factory=list)
    leased: set[UUID] = field(default_factory=set)

    async def add(self, order: Order, *, idempotency_key: str | None) -> Order:
        assert order.id not in self.rows
        if idempotency_key is not None:
            existing = self.keys.get((order.customer_id, idempotency_key))
            if existing is not None:
                return self.rows[existing]
            self.keys[(order.customer_id, idempotency_key)] = order.id
        self.rows[order.id] = order
        return order

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Order | None:
        if for_update:
            self.locked.append(order_id)
        return self.rows.get(order_id)

    async def find_by_key(self, customer_id: str, idempotency_key: str) -> Order | None:
        order_id = self.keys.get((customer_id, idempotency_key))
        return self.rows[order_id] if order_id else None

    async def update(self, order: Order) -> Order:
        assert order.id in self.rows
        self.rows[order.id] = order
        return order

    async def update_pending(self, order: Order) -> Order | None:
        if not self.rows[order.id].is_pending:
            return None
        self.rows[order.id] = order
        return order

    async def find(
        self, filters: OrderFilter, *, limit: int, after: tuple[datetime, UUID] | None
    ) -> list[Order]:
        found = sorted(self.rows.values(), key=lambda o: (o.created_at, o.id), reverse=True)
        found = [
            o
            for o in found
            if (filters.customer_id is None or o.customer_id == filters.customer_id)
            and (filters.status is None or o.status is filters.status)
            and (after is None or (o.created_at, o.id) < after)
        ]
        return found[:limit]

    async def claim_due(
        self, *, limit: int, lease_seconds: float, max_backoff: float, min_lease: float
    ) -> list[Order]:
        self.claims.append(
            {
                "limit": limit,
                "lease_seconds": lease_seconds,
                "max_backoff": max_backoff,
                "min_lease": min_lease,
            }
        )
        due = sorted(
            (
                o
                for o in self.rows.values()
                if (o.is_pending or o.release_pending) and o.id not in self.leased
            ),
            key=lambda o: (o.created_at, o.id),
        )[:limit]
        self.leased.update(o.id for o in due)
        return due

    def end_leases(self) -> None:
        """Every lease has run out: the orders are due again."""
        self.leased.clear()

    async def mark_stock_released(self, order_id: UUID, reservation_id: UUID) -> bool:
        return False

    async def pending_backlog(self) -> PendingBacklog:
        created = [o.created_at for o in self.rows.values() if o.is_pending]
        oldest = (datetime.now(UTC) - min(created)).total_seconds() if created else 0.0
        return PendingBacklog(count=len(created), oldest_seconds=oldest)


@dataclass
class MemoryEvents:
    """The outbox: every event added, in order."""

    added: list[dict[str, Any]] = field(default_factory=list)

    async def add(self, type: str, *, subject: str, data: Any) -> dict[str, Any]:
        event = {"type": type, "subject": subject, "data": data}
        self.added.append(event)
        return event

    def of(self, type: str) -> list[dict[str, Any]]:
        """The events of one type."""
        return [e for e in self.added if e["type"] == type]


@dataclass
class MemoryUnitOfWork:
    """The orders and the outbox of one (pretend) transaction."""

    orders: MemoryOrders
    events: MemoryEvents


@dataclass
class MemoryTransactions:
    """Transactions over the memory store: a block that raises leaves no trace."""

    orders: MemoryOrders = field(default_factory=MemoryOrders)
    events: MemoryEvents = field(default_factory=MemoryEvents)
    begun: int = 0

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[MemoryUnitOfWork]:
        yield MemoryUnitOfWork(self.orders, self.events)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[MemoryUnitOfWork]:
        self.begun += 1
        rows, keys = dict(self.orders.rows), dict(self.orders.keys)
        added = list(self.events.added)
        try:
            yield MemoryUnitOfWork(self.orders, self.events)
        except BaseException:
            self.orders.rows, self.orders.keys, self.events.added = rows, keys, added
            raise


@dataclass
class FakeCatalog:
    """Catalog with stock: reserves once per order (a replay after), releases once.

    `script` (outcomes by order id, consumed one per call) overrides the stock rules, to play
    an outage (`Unavailable`) or a refusal. `breaker` is what `state()` says; `seconds`, how
    long each call takes (so calls overlap; `most_in_flight` counts them).
    """

    stock: dict[UUID, int] = field(default_factory=dict)
    price_cents: int = 100
    currency: str = "EUR"
    reservations: dict[UUID, PricedReservation] = field(default_factory=dict)
    active: set[UUID] = field(default_factory=set)
    script: dict[UUID, list[ReserveOutcome | Exception]] = field(default_factory=dict)
    releasing_fails: bool = False
    #: While set, every call answers Unavailable (and releases fail).
    down: bool = False
    #: While set, every reservation is refused as invalid with this detail.
    invalid: str | None = None
    reserve_calls: list[tuple[UUID, list[RequestedLine]]] = field(default_factory=list)
    release_calls: list[UUID] = field(default_factory=list)
    breaker: CatalogState = CatalogState.UP
    seconds: float = 0.0
    in_flight: int = 0
    most_in_flight: int = 0

    def state(self) -> CatalogState:
        return self.breaker

    async def reserve(self, order_id: UUID, lines: Sequence[RequestedLine]) -> ReserveOutcome:
        self.reserve_calls.append((order_id, list(lines)))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.seconds:
                await asyncio.sleep(self.seconds)
            return self._reserve(order_id, lines)
        finally:
            self.in_flight -= 1

    def _reserve(self, order_id: UUID, lines: Sequence[RequestedLine]) -> ReserveOutcome:
        if self.down:
            return Unavailable("catalog is down")
        if self.invalid is not None:
            return Invalid(self.invalid)
        if self.script.get(order_id):
            scripted = self.script[order_id].pop(0)
            if isinstance(scripted, Exception):
                raise scripted
            if not isinstance(scripted, Reserved):
                return scripted
        if order_id in self.reservations:
            return Reserved(self.reservations[order_id])
        short = tuple(
            li.product_id for li in lines if self.stock.get(li.product_id, 0) < li.quantity
        )
        if short:
            return OutOfStock(short)
        for li in lines:
            self.stock[li.product_id] -= li.quantity
        reservation = PricedReservation(
            id=uuid.uuid4(),
            lines=tuple(
                OrderLine(
                    li.product_id,
                    li.quantity,
                    f"SKU-{li.product_id.hex[:4]}",
                    "Thing",
                    self.price_cents,
                )
                for li in reversed(lines)  # catalog's own order: orders must keep the customer's
            ),
            total_cents=sum(li.quantity for li in lines) * self.price_cents,
            currency=self.currency,
        )
        self.reservations[order_id] = reservation
        self.active.add(reservation.id)
        return Reserved(reservation)

    async def release(self, reservation_id: UUID) -> bool:
        self.release_calls.append(reservation_id)
        if self.releasing_fails or self.down:
            return False
        if reservation_id in self.active:
            self.active.discard(reservation_id)
            reservation = next(r for r in self.reservations.values() if r.id == reservation_id)
            for line in reservation.lines:
                self.stock[line.product_id] += line.quantity
        return True


@pytest.fixture
def transactions() -> MemoryTransactions:
    """An empty in-memory order store and outbox."""
    return MemoryTransactions()


@pytest.fixture
def fake_catalog() -> FakeCatalog:
    """An in-memory catalog with no products (give it `stock`)."""
    return FakeCatalog()
