"""Run an ASGI app in-process for tests: its lifespan, and an httpx client talking to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI


@asynccontextmanager
async def serve_in_process(
    app: FastAPI, *, base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan and yield a client bound to it; stop both afterwards."""
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client
