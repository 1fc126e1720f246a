"""Serve an ASGI app on a real 127.0.0.1 socket inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from bazaar.shared.stopping import stop_notice


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: How long requests still running when the server stops may go on before uvicorn cancels
#: them (it would wait for ever by default: a stream left open stalled the run).
SHUTDOWN_GRACE_SECONDS = 30
#: How long a stop may take in all (the grace, then the app's lifespan shutdown).
STOP_SECONDS = 60
#: How long the app may take to start.
START_SECONDS = 30


@asynccontextmanager
async def serve_on_socket(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Run `app` under uvicorn on 127.0.0.1; yield its base URL; shut it down gracefully.

    As `serve` does, the app's stop notice is set as the server begins to stop (open streams
    end then). Starting and stopping are bounded: a server that does not start within
    `START_SECONDS`, or stop within `STOP_SECONDS`, is cancelled and the block fails saying so.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    server = uvicorn.Server(config)
    # The test owns the process's signals; uvicorn must not take them over.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(), name=f"uvicorn {url}")
    try:
        await _started(server, task, url)
        yield url
    finally:
        stop_notice(app).set()
        server.should_exit = True
        await _stopped(server, task, url)


async def _started(server: uvicorn.Server, task: asyncio.Task[None], url: str) -> None:
    try:
        async with asyncio.timeout(START_SECONDS):
            while not server.started:
                if task.done():
                    task.result()  # start-up failed: raise its error
                    raise RuntimeError(f"the server at {url} ended while starting")
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise TimeoutError(f"the app at {url} did not start within {START_SECONDS} s") from None


async def _stopped(server: uvicorn.Server, task: asyncio.Task[None], url: str) -> None:
    """Wait for the server to stop; cancel it if it takes longer than `STOP_SECONDS`."""
    if not server.started:  # its startup may wait for ever: nothing to stop gracefully
        task.cancel()
    try:
        done, _ = await asyncio.wait({task}, timeout=STOP_SECONDS)
    except asyncio.CancelledError:
        server.force_exit = True
        task.cancel()
        raise
    if not done:
        server.force_exit = True
        task.cancel()
        await asyncio.wait({task}, timeout=10)
        raise TimeoutError(
            f"the server at {url} did not stop within {STOP_SECONDS} s (requests still running "
            "or the app's shutdown hung); cancelled"
        )
    if not task.cancelled():
        task.result()
