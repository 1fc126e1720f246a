"""The unit of work: the repositories and the outbox of one open transaction."""

from __future__ import annotations

import asyncpg

from bazaar.catalog.adapters.products import ProductRepository
from bazaar.catalog.adapters.reservations import ReservationRepository
from bazaar.shared.outbox import Outbox

EVENT_SOURCE = "/bazaar/catalog"


class SqlUnitOfWork:
    """Everything a catalog use case touches, bound to one transaction the caller opened."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.products = ProductRepository(conn)
        self.reservations = ReservationRepository(conn)
        self.events = Outbox(conn, source=EVENT_SOURCE)
