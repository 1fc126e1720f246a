"""Fixtures the messaging tests share: a database with the outbox, the inbox and an effect table.

A module opts in by defining `EFFECT_DDL` (its effect table) and asking for `db` or
`database_url`; a module that defines its own fixtures of those names keeps them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bazaar.shared.db import Database
from bazaar.shared.messaging import PROCESSED_MESSAGE_DDL
from bazaar.shared.outbox import OUTBOX_DDL
from bazaar.shared.testing.postgres import DatabaseFactory, open_emptied


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(request: pytest.FixtureRequest, database_factory: DatabaseFactory) -> str:
    """A database of the module's own with the outbox, the inbox and its `EFFECT_DDL` table."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    ddl = (*OUTBOX_DDL, *PROCESSED_MESSAGE_DDL, request.module.EFFECT_DDL)
    return await database_factory.create(name, ddl=ddl)


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The module's database, emptied of outbox, inbox and effect rows before each test."""
    async with open_emptied(
        database_url, "outbox", "processed_message", "effect", max_size=10
    ) as database:
        yield database
