"""Transactions at most so many at once: a share of the database pool for one user of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bazaar.orders.service.ports import Transactions, UnitOfWork


class LimitedTransactions:
    """Transactions, at most `limit` at once: the reconciler's share of the database pool."""

    def __init__(self, transactions: Transactions, limit: int) -> None:
        self._transactions = transactions
        self._slots = asyncio.Semaphore(max(1, limit))

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[UnitOfWork]:
        """A transaction, once one of the reconciler's slots is free."""
        async with self._slots, self._transactions.begin() as uow:
            yield uow

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[UnitOfWork]:
        """Statements each committed at once, once one of the reconciler's slots is free."""
        async with self._slots, self._transactions.autocommit() as uow:
            yield uow
