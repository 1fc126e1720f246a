"""FastAPI dependencies every service's routes share (resources live on `app.state`).

They are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread,
and that hand-off cost more than the rest of the dependency solving per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bazaar.shared.db import Database
from bazaar.shared.idempotency import IdempotencyStore


async def database(request: Request) -> Database:
    """The service's database pool."""
    db: Database = request.app.state.db
    return db


async def idempotency_store(request: Request) -> IdempotencyStore:
    """The service's idempotency store."""
    store: IdempotencyStore = request.app.state.idempotency
    return store


Db = Annotated[Database, Depends(database)]
Idempotency = Annotated[IdempotencyStore, Depends(idempotency_store)]
