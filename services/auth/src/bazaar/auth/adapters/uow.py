"""The unit of work: auth's repositories and outbox inside one transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from bazaar.auth.adapters.credentials import (
    ClientRepository,
    LoginThrottle,
    RefreshTokenRepository,
)
from bazaar.auth.adapters.users import UserRepository
from bazaar.shared.db import Database
from bazaar.shared.outbox import Outbox

EVENT_SOURCE = "/bazaar/auth"


class SqlUnitOfWork:
    """Everything an auth use case touches, bound to one open transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.users = UserRepository(conn)
        self.clients = ClientRepository(conn)
        self.refresh_tokens = RefreshTokenRepository(conn)
        self.throttle = LoginThrottle(conn)
        self.events = Outbox(conn, source=EVENT_SOURCE)


class SqlUnitsOfWork:
    """Opens units of work: each `async with` is one committed (or rolled back) transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[SqlUnitOfWork]:
        """A unit of work in a new transaction."""
        async with self.db.transaction() as conn:
            yield SqlUnitOfWork(conn)
