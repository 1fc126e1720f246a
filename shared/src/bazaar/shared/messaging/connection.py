"""The service's one robust broker connection, opened in the background so start-up never waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aio_pika.connection import make_url

from bazaar.shared.backoff import Backoff

log = logging.getLogger("bazaar.messaging")

#: Seconds between reconnection attempts (aio-pika's default of 5 s stretches every outage).
RECONNECT_SECONDS = 1.0
#: The first connection: jittered pauses from about 0.2 s up to this.
CONNECT_MAX_PAUSE = 5.0


class JitteredRobustConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, its pause before each reconnection jittered.

    aio-pika sleeps `reconnect_interval` between attempts, the same for every replica; read
    through this property it is 0.5 to 1.5 times the interval, drawn afresh each time, so
    replicas that lost the same broker do not all knock again in the same instant.
    """

    @property
    def reconnect_interval(self) -> float:
        """The next pause, in seconds."""
        return self._interval * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not a secret

    @reconnect_interval.setter
    def reconnect_interval(self, seconds: float) -> None:
        self._interval = seconds


class Broker:
    """A robust aio-pika connection: reconnects and restores channels, queues and consumers."""

    def __init__(self, url: str, *, name: str) -> None:
        self._url = url
        self._name = name
        self._connection: AbstractRobustConnection | None = None
        self._ready = asyncio.Event()

    async def connect(self) -> AbstractRobustConnection:
        """Connect, retrying (jittered backoff) until the broker answers."""
        backoff = Backoff(0.2, CONNECT_MAX_PAUSE)
        while self._connection is None:
            # Built here, not by aio_pika.connect_robust, so a failed attempt's half-built
            # connection is closed (connect_robust drops it, leaving a close never awaited).
            connection = JitteredRobustConnection(
                make_url(self._url, reconnect_interval=RECONNECT_SECONDS),
                client_properties={"connection_name": self._name},
                reconnect_interval=RECONNECT_SECONDS,
            )
            try:
                await connection.connect()
            except (aio_pika.exceptions.AMQPError, OSError) as exc:
                with contextlib.suppress(Exception):
                    await connection.close()
                log.warning("broker unreachable (%s); retrying", type(exc).__name__)
                await backoff.sleep()
            else:
                self._connection = connection
        self._ready.set()
        return self._connection

    async def ready(self) -> AbstractRobustConnection:
        """Wait until the first connection is made."""
        await self._ready.wait()
        assert self._connection is not None  # noqa: S101 - narrows: set before _ready
        return self._connection

    async def channel(self, *, prefetch: int | None = None) -> AbstractRobustChannel:
        """A robust channel with publisher confirms; returned (unroutable) messages raise."""
        connection = await self.ready()
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        assert isinstance(channel, AbstractRobustChannel)  # noqa: S101 - narrows: a robust connection's channel
        return channel

    async def ping(self) -> bool:
        """Answer whether the connection is up right now (the readiness check)."""
        conn = self._connection
        return conn is not None and not conn.is_closed and conn.connected.is_set()

    def is_blocked(self) -> bool:
        """Answer whether the broker blocks our publications now (a memory or disk alarm).

        RabbitMQ says so with `connection.blocked`/`unblocked`; aiormq keeps the state in an
        event its writer waits on and offers no public accessor, so it is read from there
        (a missing attribute, after an aiormq upgrade, reads as never blocked).
        """
        conn = self._connection
        transport = getattr(conn, "transport", None) if conn is not None else None
        underlay = getattr(transport, "connection", None)
        unblocked = getattr(underlay, "_Connection__connection_unblocked", None)
        return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()

    async def close(self) -> None:
        """Close the connection (its channels with it)."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
