"""A TCP proxy for tests that can make a dependency refuse, reset or hang on demand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum


class Mode(StrEnum):
    """What the proxy does with the next connections."""

    FORWARD = "forward"  # pass bytes both ways to the target
    RESET = "reset"  # accept, then reset the connection (RST) at once
    HANG = "hang"  # accept, read, never answer
    REFUSE = "refuse"  # stop listening: connections are refused
    STALL = "stall"  # open connections stay open but nothing passes (a frozen peer); new hang


class ChaosProxy:
    """Sits between a client and a real server on 127.0.0.1; switch `mode` at any time.

    Switching to RESET, HANG or REFUSE also cuts the connections already open, as a crash
    would; STALL keeps them open and silent until the mode is FORWARD again (SIGSTOP, SIGCONT).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._mode = Mode.FORWARD
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0
        self.connections = 0

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    async def set_mode(self, mode: Mode) -> None:
        """Switch mode; RESET, HANG and REFUSE drop open connections, STALL freezes them."""
        self._mode = mode
        if mode is Mode.STALL:
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode not in (Mode.FORWARD, Mode.STALL):
            for writer in list(self._writers):
                _reset(writer)
        if mode is Mode.REFUSE and self._server is not None:
            self._server.close()
            # Python 3.12 waits here for the connections to end too: never for ever.
            async with _bounded("the chaos proxy's listener to close"):
                await self._server.wait_closed()
            self._server = None
        elif mode is not Mode.REFUSE and self._server is None:
            await self._listen()

    async def start(self) -> None:
        """Listen on a free port."""
        await self._listen()

    async def stop(self) -> None:
        """Close everything."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            _reset(writer)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            async with _bounded(f"the chaos proxy's {len(self._tasks)} connection(s) to end"):
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            if self._mode is Mode.RESET:
                _reset(writer)
            elif self._mode in (Mode.HANG, Mode.STALL):
                while await reader.read(65536):
                    pass
            else:
                await self._forward(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.add(up_writer)
        try:
            await asyncio.gather(
                _pipe(reader, up_writer, self._flowing), _pipe(up_reader, writer, self._flowing)
            )
        finally:
            self._writers.discard(up_writer)
            with contextlib.suppress(Exception):
                up_writer.close()


#: How long closing the proxy's listener or connections may take.
CLOSE_SECONDS = 30


@asynccontextmanager
async def _bounded(what: str) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            yield
    except TimeoutError:
        raise TimeoutError(f"waited {CLOSE_SECONDS} s for {what}") from None


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
) -> None:
    try:
        while data := await reader.read(65536):
            await flowing.wait()
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN (SO_LINGER 0), as a crashed peer does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@asynccontextmanager
async def chaos_proxy(target_url: str) -> AsyncIterator[ChaosProxy]:
    """A started ChaosProxy in front of `target_url` (http://host:port)."""
    host, _, port = target_url.removeprefix("http://").partition(":")
    proxy = ChaosProxy(host, int(port.rstrip("/")))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
