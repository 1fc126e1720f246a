"""What the use cases need from storage: Protocols the SQL adapters (and test fakes) implement."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from bazaar.catalog.domain.model import NewProduct, Product, ProductFilter, Reservation


class Products(Protocol):
    """Product storage."""

    async def add(self, product_id: UUID, new: NewProduct) -> Product: ...
    async def get(self, product_id: UUID, *, for_update: bool = False) -> Product | None: ...
    async def sku_exists(self, sku: str) -> bool: ...
    async def list(
        self, filters: ProductFilter, *, limit: int, after: tuple[datetime, UUID] | None
    ) -> list[Product]: ...
    async def update(self, product: Product) -> Product: ...
    async def delete(self, product_id: UUID) -> Product | None: ...
    async def lock_live(self, product_ids: Iterable[UUID]) -> dict[UUID, Product]: ...
    async def adjust_stock(self, deltas: Mapping[UUID, int], *, locked: bool = False) -> None: ...


class Reservations(Protocol):
    """Reservation storage."""

    async def add(self, reservation: Reservation) -> Reservation: ...
    async def get(
        self, reservation_id: UUID, *, for_update: bool = False
    ) -> Reservation | None: ...
    async def get_by_order(
        self, order_id: UUID, *, for_update: bool = False
    ) -> Reservation | None: ...
    async def mark_released(self, reservation_id: UUID) -> bool: ...


class Events(Protocol):
    """The outbox of the open transaction."""

    async def add(self, type: str, *, subject: str, data: Any) -> dict[str, Any]: ...


class UnitOfWork(Protocol):
    """Everything one use case touches inside one transaction."""

    @property
    def products(self) -> Products: ...
    @property
    def reservations(self) -> Reservations: ...
    @property
    def events(self) -> Events: ...
