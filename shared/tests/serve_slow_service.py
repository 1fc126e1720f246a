"""A service for the shutdown test, served by the shared `serve` command.

Run as `python serve_slow_service.py` with SLOWSVC_DATABASE_URL and SLOWSVC_PORT set;
`GET /slow?seconds=S` answers after S seconds; `GET /stream` sends a line every 0.1 s until
the app's stop notice (as the order status stream does); the service's own lifespan logs
`slow service resources closed` when it ends. SLOWSVC_GRACE shortens the shutdown grace;
SLOWSVC_STARTUP makes the lifespan's startup take that many seconds; SLOWSVC_FAIL makes it
fail.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic_settings import SettingsConfigDict

from bazaar.shared import cli
from bazaar.shared.app import create_service_app
from bazaar.shared.cli import ServiceCommands, run
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.stopping import stop_notice

log = logging.getLogger("slow")
router = APIRouter()


class SlowSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SLOWSVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "slow"


@router.get("/slow")
async def slow(seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@router.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    notice = stop_notice(request.app)

    async def lines() -> AsyncIterator[bytes]:
        yield b"first\n"
        while not notice.is_set():
            await asyncio.sleep(0.1)
            yield b"tick\n"
        yield b"bye\n"

    return StreamingResponse(lines(), media_type="text/plain")


@asynccontextmanager
async def resources(_app: FastAPI) -> AsyncIterator[None]:
    log.info("slow service starting")
    await asyncio.sleep(float(os.environ.get("SLOWSVC_STARTUP", "0")))
    if os.environ.get("SLOWSVC_FAIL"):
        raise RuntimeError("the slow service could not start")
    log.info("slow service started")
    yield
    log.info("slow service resources closed")


def create_app(settings: Any) -> FastAPI:
    return create_service_app(
        settings,
        title="Slow",
        description="Answers slowly.",
        routers=[router],
        error_map={},
        lifespan=resources,
    )


COMMANDS = ServiceCommands(
    name="slow", settings=SlowSettings, app=create_app, migrations_dir=Path(".")
)

if __name__ == "__main__":
    if "SLOWSVC_GRACE" in os.environ:
        cli.GRACEFUL_SHUTDOWN_SECONDS = int(os.environ["SLOWSVC_GRACE"])
    raise SystemExit(run(COMMANDS, ["serve"]))
