"""What the use cases need from the outside: Protocols the adapters (and test fakes) implement."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from bazaar.orders.domain.model import Order, OrderStatus, PricedReservation, RequestedLine


@dataclass(frozen=True, slots=True)
class Reserved:
    """Catalog holds the stock (now, or already from an earlier attempt with the same key)."""

    reservation: PricedReservation


@dataclass(frozen=True, slots=True)
class OutOfStock:
    """Catalog refused: some lines cannot be served; nothing is reserved."""

    product_ids: tuple[UUID, ...]


@dataclass(frozen=True, slots=True)
class Invalid:
    """Catalog refused the lines as invalid (mixed currencies…); nothing is reserved."""

    detail: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Catalog could not answer for the order (down, hanging, breaker open): try again later."""

    reason: str
    #: The call reached catalog and failed there (its own refusal, a timeout, a 5xx), rather
    #: than being stopped on our side (no service token, the breaker open).
    reached: bool = False
    #: Catalog answered other calls while this one was in flight: it is up, not out.
    others_answered: bool = False


ReserveOutcome = Reserved | OutOfStock | Invalid | Unavailable


class CatalogState(StrEnum):
    """What catalog's circuit breaker lets through now."""

    #: Closed: catalog answers; call it as much as needed.
    UP = "up"
    #: Open for its reset time (or half-open): one call may test whether catalog is back.
    TRIAL = "trial"
    #: Open: no call would leave.
    DOWN = "down"


class Catalog(Protocol):
    """Catalog's reservations, as orders sees them."""

    def state(self) -> CatalogState:
        """What catalog's breaker lets through now: everything, one trial call, or nothing."""
        ...

    async def reserve(self, order_id: UUID, lines: Sequence[RequestedLine]) -> ReserveOutcome:
        """Reserve every line for the order (idempotent per order), or say why not."""
        ...

    async def release(self, reservation_id: UUID) -> bool:
        """Release a reservation (idempotent); False if catalog could not be asked."""
        ...


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """Which orders a list shows."""

    customer_id: str | None = None
    status: OrderStatus | None = None


@dataclass(frozen=True, slots=True)
class PendingBacklog:
    """The pending orders now: how many, and how long the oldest has waited."""

    count: int
    #: Seconds since the oldest pending order was placed (0 when none is pending).
    oldest_seconds: float


class Orders(Protocol):
    """Order storage."""

    async def add(self, order: Order, *, idempotency_key: str | None) -> Order: ...
    async def get(self, order_id: UUID, *, for_update: bool = False) -> Order | None: ...
    async def update(self, order: Order) -> Order: ...
    async def update_pending(self, order: Order) -> Order | None: ...
    async def find(
        self, filters: OrderFilter, *, limit: int, after: tuple[datetime, UUID] | None
    ) -> list[Order]: ...
    async def claim_due(
        self, *, limit: int, lease_seconds: float, max_backoff: float, min_lease: float
    ) -> list[Order]: ...
    async def mark_stock_released(self, order_id: UUID, reservation_id: UUID) -> bool: ...
    async def pending_backlog(self) -> PendingBacklog: ...


class Events(Protocol):
    """The outbox of the open transaction."""

    async def add(self, type: str, *, subject: str, data: Any) -> dict[str, Any]: ...


class UnitOfWork(Protocol):
    """Everything one use case touches inside one transaction."""

    @property
    def orders(self) -> Orders: ...
    @property
    def events(self) -> Events: ...


class Transactions(Protocol):
    """Opens transactions, for use cases that need more than one (a remote call between)."""

    def begin(self) -> AbstractAsyncContextManager[UnitOfWork]: ...
    def autocommit(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A unit of work whose every statement commits on its own (no BEGIN/COMMIT)."""
        ...
