"""The service's one robust broker connection, opened in the background so start-up never waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

log = logging.getLogger("bazaar.messaging")

#: Seconds between reconnection attempts (aio-pika's default of 5 s stretches every outage).
RECONNECT_SECONDS = 1.0


class Broker:
    """A robust aio-pika connection: reconnects and restores channels, queues and consumers."""

    def __init__(self, url: str, *, name: str) -> None:
        self._url = url
        self._name = name
        self._connection: AbstractRobustConnection | None = None
        self._ready = asyncio.Event()

    async def connect(self) -> AbstractRobustConnection:
        """Connect, retrying every RECONNECT_SECONDS until the broker answers."""
        while self._connection is None:
            try:
                self._connection = await aio_pika.connect_robust(
                    self._url,
                    client_properties={"connection_name": self._name},
                    reconnect_interval=RECONNECT_SECONDS,
                )
            except (aio_pika.exceptions.AMQPError, OSError) as exc:
                log.warning("broker unreachable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(RECONNECT_SECONDS)
        self._ready.set()
        return self._connection

    async def ready(self) -> AbstractRobustConnection:
        """Wait until the first connection is made."""
        await self._ready.wait()
        assert self._connection is not None
        return self._connection

    async def channel(self, *, prefetch: int | None = None) -> AbstractRobustChannel:
        """A robust channel with publisher confirms; returned (unroutable) messages raise."""
        connection = await self.ready()
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        assert isinstance(channel, AbstractRobustChannel)
        return channel

    async def ping(self) -> bool:
        """Answer whether the connection is up right now (the readiness check)."""
        conn = self._connection
        return conn is not None and not conn.is_closed and conn.connected.is_set()

    async def close(self) -> None:
        """Close the connection (its channels with it)."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
