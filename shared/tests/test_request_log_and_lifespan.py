"""The access log line of every request, and a service's own lifespan and readiness checks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import pytest
import pytest_asyncio
from fastapi import APIRouter, FastAPI
from pydantic_settings import SettingsConfigDict

from bazaar.shared.app import create_service_app
from bazaar.shared.auth import VerifierSettings
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.postgres import DatabaseFactory


class ThingSettings(ServiceSettings):
    """Settings of the throwaway service."""

    model_config = SettingsConfigDict(env_prefix="THINGSVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "things"


def make_settings(verifier_settings: VerifierSettings, database_url: str) -> ThingSettings:
    return ThingSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=database_url,
        jwt_jwks_url=verifier_settings.jwks_url,
        jwt_issuer=verifier_settings.issuer,
    )


router = APIRouter()


@router.get("/things/{thing_id}")
async def get_thing(thing_id: str) -> dict[str, str]:
    """Return one thing."""
    return {"id": thing_id}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create("request_log")


def _app(settings: ThingSettings, lifespan: object = None) -> FastAPI:
    return create_service_app(
        settings,
        title="Things",
        description="Access log and lifespan tests.",
        routers=[router],
        error_map={},
        lifespan=lifespan,  # type: ignore[arg-type]
    )


async def test_each_request_writes_one_access_line_with_its_route_template_and_ids(
    verifier_settings: VerifierSettings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(make_settings(verifier_settings, database_url))
    caplog.set_level(logging.INFO, logger="bazaar.access")
    async with serve_in_process(app) as client:
        response = await client.get("/things/abc-123", headers={"X-Request-ID": "req-42"})
        await client.get("/healthz")
        await client.get("/metrics")
    lines = [r for r in caplog.records if r.name == "bazaar.access"]
    assert len(lines) == 1, "probes and scrapes are not logged"
    line = lines[0]
    assert line.http_method == "GET"  # type: ignore[attr-defined]
    assert line.http_route == "/things/{thing_id}"  # type: ignore[attr-defined]
    assert line.http_status == 200  # type: ignore[attr-defined]
    assert line.duration_ms >= 0  # type: ignore[attr-defined]
    assert response.headers["X-Request-ID"] == "req-42"


async def test_a_service_lifespan_runs_inside_the_shared_one_and_adds_readiness_checks(
    verifier_settings: VerifierSettings, database_url: str
) -> None:
    events: list[str] = []
    broker_up = True

    async def broker_ready() -> bool:
        return broker_up

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert app.state.db is not None, "the shared resources exist before the service's"
        app.state.readiness_checks["broker"] = broker_ready
        events.append("start")
        yield
        events.append("stop")

    app = _app(make_settings(verifier_settings, database_url), lifespan)
    async with serve_in_process(app) as client:
        ready = await client.get("/readyz")
        broker_up = False
        not_ready = await client.get("/readyz")
    assert events == ["start", "stop"]
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"] == {"database": "ok", "broker": "failing"}
    assert "broker" in not_ready.json()["detail"]
    assert not_ready.headers["content-type"].startswith("application/problem+json")
    assert not_ready.headers["Retry-After"].isdigit()  # a 503 always says when to come back


async def test_a_trailing_slash_is_a_404_not_a_redirect_revealing_the_host(
    verifier_settings: VerifierSettings, database_url: str
) -> None:
    app = _app(make_settings(verifier_settings, database_url))
    async with serve_in_process(app, base_url="http://catalog.internal.svc:8002") as client:
        response = await client.get("/things/abc/")
    assert response.status_code == 404
    assert "location" not in response.headers
    assert "internal" not in response.text
