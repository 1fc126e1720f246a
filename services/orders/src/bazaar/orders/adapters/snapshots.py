"""Orders with their versions, for status streams: the reads asked for together (a change of
many orders in one commit wakes many streams at once) go in one statement, on a connection
borrowed for that statement alone."""

from __future__ import annotations

import asyncio
from uuid import UUID

from bazaar.orders.adapters.orders import COLUMNS, _order
from bazaar.orders.service.watch import OrderVersion
from bazaar.shared.db import Database

#: Every change of an order a client sees is announced here, as '<order id> <version>', by
#: a trigger in the changing transaction (migration 0003).
ORDER_CHANNEL = "orders_changed"

SELECT_ORDER_VERSIONS = f"SELECT {COLUMNS}, version FROM customer_order WHERE id = ANY($1::uuid[])"

#: The most orders one statement reads: a burst is read in several statements at once (on as
#: many connections), so the first events go out before the last orders are read.
BATCH_SIZE = 64

_Batch = dict[UUID, "asyncio.Future[OrderVersion | None]"]


class OrderSnapshots:
    """Reads orders with their versions; holds a pooled connection only while it reads.

    The reads asked for in one turn of the event loop are one statement (each order once),
    sent once that turn ends: a read never joins a statement already sent, so it always
    sees what was committed before it was asked for.
    """

    def __init__(self, db: Database, *, batch_size: int = BATCH_SIZE) -> None:
        self._db = db
        self._batch_size = batch_size
        self._waiting: _Batch = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, order_id: UUID) -> OrderVersion | None:
        """The order as it stands, with its version, or None."""
        future = self._waiting.get(order_id)
        if future is None:
            loop = asyncio.get_running_loop()
            if not self._waiting:
                loop.call_soon(self._send)
            future = self._waiting[order_id] = loop.create_future()
        # A reader that goes away (its stream closed) leaves the read to the others.
        return await asyncio.shield(future)

    def _send(self) -> None:
        while self._waiting:
            ids = list(self._waiting)[: self._batch_size]
            batch = {order_id: self._waiting.pop(order_id) for order_id in ids}
            task = asyncio.get_running_loop().create_task(self._fetch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fetch(self, batch: _Batch) -> None:
        try:
            async with self._db.connection() as conn:
                rows = await conn.fetch(SELECT_ORDER_VERSIONS, list(batch))
            found = {row["id"]: OrderVersion(_order(row), row["version"]) for row in rows}
        except Exception as exc:
            # Every reader still there is told (none is left waiting); none is owed it.
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()
            return
        except BaseException:  # cancelled: the loop is closing
            for future in batch.values():
                future.cancel()
            raise
        for order_id, future in batch.items():
            if not future.done():
                future.set_result(found.get(order_id))
