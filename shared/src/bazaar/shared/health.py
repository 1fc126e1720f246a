"""Operational endpoints kept out of the business routers: health, readiness, metrics, version."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from bazaar.shared.errors import problem_response
from bazaar.shared.problem import Problem
from bazaar.shared.version import service_version

#: Probes and scrapes: neither logged per request nor traced (they would drown real traffic).
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

ReadinessCheck = Callable[[], Awaitable[bool]]
READINESS_TIMEOUT = 2.0


async def _run_check(check: ReadinessCheck) -> bool:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            return await check()
    except Exception:
        return False


def ops_router() -> APIRouter:
    """The routes every process serves for its operators (not in the OpenAPI document)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Answer that the process is alive."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(request: Request) -> Response:
        """Answer whether every dependency is reachable (503 problem if one is not)."""
        checks: dict[str, ReadinessCheck] = request.app.state.readiness_checks
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[n]) for n in names))
        states = {n: ("ok" if ok else "failing") for n, ok in zip(names, results, strict=True)}
        if all(results):
            return JSONResponse({"status": "ready", "checks": states})
        failing = ", ".join(n for n, s in states.items() if s != "ok")
        problem = Problem(
            503,
            "not-ready",
            "Not Ready",
            f"Dependencies unavailable: {failing}.",
            extensions={"checks": states},
        )
        return problem_response(problem, instance="/readyz")

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Expose Prometheus metrics of this process."""
        return Response(
            generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    @router.get("/version")
    async def version(request: Request) -> dict[str, str]:
        """Tell which service and version answers."""
        settings = request.app.state.settings
        return {
            "service": settings.service_name,
            "version": service_version(settings.service_name),
            "environment": settings.environment,
        }

    return router
