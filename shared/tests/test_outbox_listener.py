"""The relay's LISTEN connection is never left open behind it, however the relay stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from bazaar.shared.messaging import listener as listener_module
from bazaar.shared.messaging.listener import OutboxListener
from bazaar.shared.testing.postgres import DatabaseFactory


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> AsyncIterator[str]:
    yield await database_factory.create("outbox_listener")


async def test_a_listener_cancelled_between_connecting_and_listening_closes_its_connection(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[asyncpg.Connection] = []
    real_connect = asyncpg.connect

    async def connect_then_get_cancelled(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        # A real connection; the shutdown's cancellation lands at the next await (LISTEN).
        connection = await real_connect(*args, **kwargs)
        opened.append(connection)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return connection

    monkeypatch.setattr(listener_module.asyncpg, "connect", connect_then_get_cancelled)
    listening = OutboxListener(database_url)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(listening.listen())
    [connection] = opened
    assert connection.is_closed()


async def test_close_ends_the_listen_connection(database_url: str) -> None:
    listening = OutboxListener(database_url)
    await listening.listen()
    connection = listening._connection
    assert connection is not None and not connection.is_closed()
    await listening.close()
    assert connection.is_closed()
    await listening.close()  # twice is harmless
