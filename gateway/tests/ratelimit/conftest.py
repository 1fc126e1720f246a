"""Rate-limiter fixtures: 'Redis' servers on 127.0.0.1 that hang, lag or answer wrongly."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from bazaar.shared.testing.infrastructure import Resolved


class Hang:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
            await writer.wait_closed()
        await self.server.wait_closed()


class Slow:
    """A TCP proxy to Redis that holds every answer for `delay` seconds (a slow network).

    `delay` may change while connections are open, e.g. after connecting fast.
    """

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lagging: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(self.delay if lagging else 0.0)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer, False)),
            asyncio.create_task(self._pipe(up_reader, writer, True)),
        ):
            self.tasks.add(task)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"
        return self.url

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


class Answering:
    """A fake Redis that answers every script call with fixed RESP bytes, anything else +OK."""

    def __init__(self, script_answer: bytes) -> None:
        self.script_answer = script_answer
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while header := await reader.readline():  # b"*<n>\r\n", then n bulk strings
                words = []
                for _ in range(int(header[1:])):
                    length = int((await reader.readline())[1:])
                    words.append((await reader.readexactly(length + 2))[:-2])
                script = words[0].upper() in (b"EVALSHA", b"EVAL")
                writer.write(self.script_answer if script else b"+OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture
def closed_url() -> str:
    """The URL of a port on 127.0.0.1 nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


@pytest_asyncio.fixture(loop_scope="session")
async def hanging_url() -> AsyncIterator[str]:
    """The URL of a 'Redis' that accepts connections and never answers."""
    hang = Hang()
    yield await hang.start()
    await hang.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def slow_redis(redis_server: Resolved) -> AsyncIterator[Callable[[float], Awaitable[Slow]]]:
    """Start proxies to the test Redis that delay each answer by the given seconds."""
    host, port = redis_server.url.split("//")[1].split("/")[0].rsplit(":", 1)
    proxies: list[Slow] = []

    async def start(delay: float) -> Slow:
        proxies.append(Slow((host, int(port)), delay))
        await proxies[-1].start()
        return proxies[-1]

    try:
        yield start
    finally:
        for proxy in proxies:
            await proxy.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def answering_redis() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """Start fake Redis servers answering every script call with the given RESP bytes."""
    servers: list[Answering] = []

    async def start(script_answer: bytes) -> str:
        servers.append(Answering(script_answer))
        return await servers[-1].start()

    try:
        yield start
    finally:
        for server in servers:
            await server.stop()
