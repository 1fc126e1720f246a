"""The app factory: problem+json for every error, request and trace ids, ops routes, metrics."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from bazaar.shared.app import create_service_app
from bazaar.shared.auth import VerifierSettings
from bazaar.shared.dbfailure import DatabaseBusy
from bazaar.shared.problem import PROBLEM_CONTENT_TYPE, ProblemError, ProblemSpec
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.postgres import DatabaseFactory
from bazaar.shared.tracecontext import current_request_id, current_span_id, current_trace_id
from bazaar.shared.version import UNKNOWN_VERSION

HEX32 = re.compile(r"^[0-9a-f]{32}$")
VALID_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
INCOMING_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
INCOMING_PARENT_ID = "b7ad6b7169203331"
SECRET_MESSAGE = "secret-db-host:5432"
#: Nothing listens on port 1: connecting is refused at once.
UNREACHABLE_DATABASE_URL = "postgresql://postgres:pw@127.0.0.1:1/nowhere"


class WidgetSettings(ServiceSettings):
    """Settings of the throwaway service these tests build."""

    model_config = SettingsConfigDict(env_prefix="WIDGETSVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "widgets"


class WidgetLocked(Exception):
    """A domain error, mapped to 409 through the error map."""


class GlassWidgetLocked(WidgetLocked):
    """A subclass of a mapped domain error; no entry of its own."""


class SlowDown(ProblemError):
    """A ProblemError that carries its own header."""

    status, slug, title = 429, "rate-limited", "Too Many Requests"


class SignUp(BaseModel):
    username: str = Field(min_length=3)
    password: str = Field(min_length=12)
    age: int


class WarehouseDown(Exception):
    """A domain error mapped to 503 through the error map."""


ERROR_MAP = {
    WidgetLocked: ProblemSpec(409, "widget-locked", "Widget Locked"),
    WarehouseDown: ProblemSpec(503, "service-unavailable", "Service Unavailable"),
}

router = APIRouter()


@router.get("/items/{item_id}")
async def get_item(item_id: str) -> dict[str, str]:
    """Return one item."""
    return {"id": item_id}


@router.post("/items/{item_id}/lock")
async def lock_item(item_id: str) -> dict[str, str]:
    """Fail with a mapped domain error."""
    raise WidgetLocked(f"Item {item_id} is locked by another order.")


@router.post("/glass/{item_id}/lock")
async def lock_glass(item_id: str) -> dict[str, str]:
    """Fail with a subclass of a mapped domain error."""
    raise GlassWidgetLocked(f"Glass item {item_id} is locked.")


@router.get("/slow-down")
async def slow_down() -> dict[str, str]:
    """Fail with a ProblemError carrying a header."""
    raise SlowDown("Try again in a few seconds.", headers={"Retry-After": "7"})


@router.post("/signups", status_code=201)
async def sign_up(body: SignUp) -> dict[str, str]:
    """Validate a body holding a password."""
    return {"username": body.username}


@router.get("/warehouse")
async def warehouse() -> dict[str, str]:
    """Fail with a domain error mapped to 503."""
    raise WarehouseDown("The warehouse is down.")


@router.get("/deadlock")
async def deadlock() -> dict[str, str]:
    """Fail with a deadlock that escaped every retry."""
    raise asyncpg.DeadlockDetectedError("deadlock detected")


@router.get("/boom")
async def boom() -> dict[str, str]:
    """Fail unexpectedly with internals in the message."""
    raise RuntimeError(SECRET_MESSAGE)


@router.get("/missing-file")
async def missing_file() -> dict[str, str]:
    """Fail with a local OSError: a code or configuration bug, not an outage."""
    raise FileNotFoundError(2, "No such file or directory", "/etc/bazaar/widget.pem")


@router.get("/busy-in-a-group")
async def busy_in_a_group() -> dict[str, str]:
    """Fail inside a TaskGroup with no database connection to be had."""

    async def need_database() -> None:
        raise DatabaseBusy()

    async with asyncio.TaskGroup() as group:
        group.create_task(need_database())
    return {}


@router.get("/context")
async def context() -> dict[str, Any]:
    """Tell the ids the handler sees."""
    return {
        "trace_id": current_trace_id(),
        "span_id": current_span_id(),
        "request_id": current_request_id(),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create("app_factory")


def make_settings(
    verifier_settings: VerifierSettings, database_url: str, **overrides: Any
) -> WidgetSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "version": "9.8.7",
        "database_url": database_url,
        "jwt_jwks_url": verifier_settings.jwks_url,
        "jwt_issuer": verifier_settings.issuer,
        "jwt_audience": verifier_settings.audience,
        **overrides,
    }
    return WidgetSettings(_env_file=None, **values)  # type: ignore[call-arg]


def make_app(settings: WidgetSettings) -> FastAPI:
    return create_service_app(
        settings,
        title="Widgets",
        description="A throwaway service for the app factory's tests.",
        routers=[router],
        error_map=ERROR_MAP,
    )


@pytest.fixture
def app(verifier_settings: VerifierSettings, database_url: str) -> FastAPI:
    return make_app(make_settings(verifier_settings, database_url))


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_in_process(app) as c:
        yield c


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """Check the RFC 9457 shape shared by every error answer; return the body."""
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert body["type"].endswith("/" + slug)
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["instance"] == response.request.url.path
    assert HEX32.match(body["trace_id"])
    assert body["trace_id"] == response.headers["X-Trace-Id"]
    assert "Traceback" not in response.text
    return body


# --- errors -----------------------------------------------------------------------------


async def test_a_mapped_domain_error_is_answered_as_its_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/items/42/lock")

    body = assert_problem(response, 409, "widget-locked")
    assert body["title"] == "Widget Locked"
    assert body["detail"] == "Item 42 is locked by another order."
    assert body["instance"] == "/items/42/lock"


async def test_a_subclass_of_a_mapped_error_is_answered_by_the_parent_mapping(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/glass/7/lock")

    body = assert_problem(response, 409, "widget-locked")
    assert body["detail"] == "Glass item 7 is locked."


async def test_a_problem_error_passes_its_own_status_and_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/slow-down")

    body = assert_problem(response, 429, "rate-limited")
    assert body["detail"] == "Try again in a few seconds."
    assert response.headers["Retry-After"] == "7"


async def test_a_503_from_the_error_map_carries_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.get("/warehouse")

    assert_problem(response, 503, "service-unavailable")
    assert response.headers["Retry-After"] == "1"


async def test_a_deadlock_escaping_a_route_is_a_503_with_retry_after_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/deadlock")

    body = assert_problem(response, 503, "service-unavailable")
    assert response.headers["Retry-After"] == "1"
    assert "deadlock" not in body["detail"]


async def test_a_validation_error_lists_each_failure_without_echoing_the_input(
    client: httpx.AsyncClient,
) -> None:
    secret = "hunter2-pw"  # too short, so the password itself fails validation
    response = await client.post(
        "/signups", json={"username": "ab", "password": secret, "age": "old"}
    )

    body = assert_problem(response, 422, "validation-error")
    assert secret not in response.text
    errors = body["errors"]
    assert {tuple(e["loc"]) for e in errors} == {
        ("body", "username"),
        ("body", "password"),
        ("body", "age"),
    }
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}
        assert isinstance(error["msg"], str) and error["msg"]
        assert isinstance(error["type"], str) and error["type"]


async def test_malformed_json_is_a_422_validation_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/signups",
        content=b'{"username": "abc", "password":',
        headers={"Content-Type": "application/json"},
    )

    body = assert_problem(response, 422, "validation-error")
    assert body["errors"]
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])


async def test_an_unknown_route_is_a_404_not_found_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/thing")

    assert_problem(response, 404, "not-found")


async def test_a_wrong_method_is_a_405_problem_naming_the_allowed_ones(
    client: httpx.AsyncClient,
) -> None:
    response = await client.delete("/items/42")

    assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"]


async def test_an_unexpected_exception_is_a_500_problem_without_internals(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "boom-1"})

    body = assert_problem(response, 500, "internal-error")
    assert SECRET_MESSAGE not in response.text
    assert "RuntimeError" not in response.text
    assert "Traceback" not in body["detail"]
    assert response.headers["X-Request-ID"] == "boom-1"


async def test_a_missing_file_in_a_route_is_a_500_with_its_traceback_logged_not_an_outage(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        response = await client.get("/missing-file")

    assert_problem(response, 500, "internal-error")
    assert "Retry-After" not in response.headers
    assert "widget.pem" not in response.text
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is FileNotFoundError]
    assert logged, "the bug's traceback is logged"
    assert not [r for r in caplog.records if "dependency unavailable" in r.getMessage()]


async def test_a_busy_database_inside_a_task_group_is_a_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/busy-in-a-group")

    assert_problem(response, 503, "service-unavailable")
    assert response.headers["Retry-After"] == "1"


async def test_an_oversized_body_is_a_413_with_the_request_and_trace_ids_and_is_counted(
    verifier_settings: VerifierSettings, database_url: str
) -> None:
    app = make_app(make_settings(verifier_settings, database_url, max_body_bytes=2048))
    traceparent = f"00-{INCOMING_TRACE_ID}-{INCOMING_PARENT_ID}-01"
    ids = {"X-Request-ID": "big-1", "traceparent": traceparent}
    big = {"username": "x" * 4096, "password": "p" * 12, "age": 1}

    async def streamed() -> AsyncIterator[bytes]:
        yield b'{"username": "'
        for _ in range(4):
            yield b"y" * 1024
        yield b'", "password": "pppppppppppp", "age": 1}'

    async with serve_in_process(app) as client:
        declared = await client.post("/signups", json=big, headers=ids)
        chunked = await client.post(
            "/signups", content=streamed(), headers={**ids, "content-type": "application/json"}
        )
        served = await client.post("/signups", json={**big, "username": "abc"})
        metrics = (await client.get("/metrics")).text

    for response in (declared, chunked):
        body = assert_problem(response, 413, "payload-too-large")
        assert body["trace_id"] == INCOMING_TRACE_ID
        assert response.headers["X-Request-ID"] == "big-1"
        assert response.headers["X-Trace-Id"] == INCOMING_TRACE_ID
    assert declared.headers["Connection"] == "close"
    assert served.status_code == 201
    # Refused unread before routing (its route unknown), or cut off while the route read it.
    for route in ("unmatched", "/signups"):
        labels = f'http_request_method="POST",http_response_status_code="413",http_route="{route}"'
        assert f"http_server_request_duration_seconds_count{{{labels}}} 1.0" in metrics


# --- request id -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    ["abc-123", "x", "A" * 128, "!~req:id/with.punct", "0f8fad5b-d9cb-469f-a165-70867728950e"],
)
async def test_a_valid_request_id_is_echoed_and_seen_by_the_handler(
    client: httpx.AsyncClient, request_id: str
) -> None:
    response = await client.get("/context", headers={"X-Request-ID": request_id})

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    assert response.json()["request_id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    [b"", b"A" * 129, b"has space", "caf\u00e9".encode(), b"tab\there", "\u2603".encode()],
    ids=["empty", "129-chars", "space", "accented", "tab", "snowman"],
)
async def test_an_invalid_request_id_is_replaced_by_a_generated_one(
    client: httpx.AsyncClient, request_id: bytes
) -> None:
    response = await client.get("/context", headers={"X-Request-ID": request_id})

    assert response.status_code == 200
    echoed = response.headers["X-Request-ID"]
    assert echoed.encode() != request_id
    assert VALID_REQUEST_ID.match(echoed)
    assert response.json()["request_id"] == echoed


async def test_a_missing_request_id_is_generated_fresh_for_each_request(
    client: httpx.AsyncClient,
) -> None:
    first = await client.get("/context")
    second = await client.get("/context")

    assert VALID_REQUEST_ID.match(first.headers["X-Request-ID"])
    assert VALID_REQUEST_ID.match(second.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    assert first.json()["request_id"] == first.headers["X-Request-ID"]


# --- tracing -------------------------------------------------------------------------------


async def test_an_incoming_traceparent_is_continued_with_a_new_span(
    client: httpx.AsyncClient,
) -> None:
    traceparent = f"00-{INCOMING_TRACE_ID}-{INCOMING_PARENT_ID}-01"
    response = await client.get("/context", headers={"traceparent": traceparent})

    assert response.status_code == 200
    assert response.headers["X-Trace-Id"] == INCOMING_TRACE_ID
    seen = response.json()
    assert seen["trace_id"] == INCOMING_TRACE_ID
    assert seen["span_id"] != INCOMING_PARENT_ID


async def test_a_problem_carries_the_continued_trace_id(client: httpx.AsyncClient) -> None:
    traceparent = f"00-{INCOMING_TRACE_ID}-{INCOMING_PARENT_ID}-01"
    response = await client.get("/no/such/thing", headers={"traceparent": traceparent})

    body = assert_problem(response, 404, "not-found")
    assert body["trace_id"] == INCOMING_TRACE_ID


async def test_without_a_traceparent_a_new_trace_starts_per_request(
    client: httpx.AsyncClient,
) -> None:
    first = await client.get("/context", headers={"traceparent": "garbage"})
    second = await client.get("/context")

    assert HEX32.match(first.headers["X-Trace-Id"])
    assert HEX32.match(second.headers["X-Trace-Id"])
    assert first.headers["X-Trace-Id"] != second.headers["X-Trace-Id"]
    assert first.json()["trace_id"] == first.headers["X-Trace-Id"]


# --- ops routes -----------------------------------------------------------------------------


async def test_healthz_answers_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_answers_200_when_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_readyz_answers_503_problem_when_the_database_is_unreachable(
    verifier_settings: VerifierSettings,
) -> None:
    # The real lifespan, the real readiness check and a real refused connection: with
    # db_pool_min=0 asyncpg opens the pool without connecting, so the app starts, and the
    # `database` check registered by the lifespan has to connect to 127.0.0.1:1 (refused).
    settings = make_settings(
        verifier_settings, UNREACHABLE_DATABASE_URL, db_pool_min=0, db_acquire_timeout=1.0
    )
    async with serve_in_process(make_app(settings)) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert body["type"].endswith("/not-ready")
    assert body["status"] == 503
    assert body["instance"] == "/readyz"
    assert body["checks"] == {"database": "failing"}
    assert "127.0.0.1" not in response.text
    assert "pw" not in body["detail"]


async def test_metrics_time_requests_by_method_route_template_and_status(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/items/raw-id-abc")
    await client.get("/items/raw-id-xyz")
    await client.post("/items/raw-id-abc/lock")
    await client.get("/boom")
    await client.get("/no/such/raw-path")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "raw-id" not in response.text
    assert "raw-path" not in response.text
    samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]
    # OpenTelemetry's names: the histogram's count is the request count (no counter besides).
    counts = {
        (
            s.labels["http_request_method"],
            s.labels["http_route"],
            s.labels["http_response_status_code"],
        ): s.value
        for s in samples
        if s.name == "http_server_request_duration_seconds_count"
    }
    assert counts[("GET", "/items/{item_id}", "200")] == 2
    assert counts[("POST", "/items/{item_id}/lock", "409")] == 1
    assert counts[("GET", "/boom", "500")] == 1
    assert counts[("GET", "unmatched", "404")] == 1
    names = {s.name for s in samples}
    assert {"http_server_request_duration_seconds_bucket", "http_server_active_requests"} <= names
    assert not names & {"http_server_requests_total", "http_server_requests_in_flight"}


async def test_version_names_the_service_and_its_installed_version(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/version")

    # The version comes from the installed package's metadata, never from a setting (9.8.7
    # here): a service with no installed distribution says so.
    assert response.status_code == 200
    assert response.json() == {
        "service": "widgets",
        "version": UNKNOWN_VERSION,
        "environment": "test",
    }


async def test_ops_routes_stay_out_of_the_openapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Widgets"
    assert document["info"]["version"] == UNKNOWN_VERSION
    paths = set(document["paths"])
    assert "/items/{item_id}" in paths
    assert paths.isdisjoint({"/healthz", "/readyz", "/metrics", "/version"})
