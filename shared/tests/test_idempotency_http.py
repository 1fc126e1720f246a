"""The FastAPI glue of idempotency: the header, replayed answers, stored problems."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.responses import Response

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.idempotency import (
    IDEMPOTENCY_DDL,
    IdempotencyStore,
    OptionalIdempotencyKey,
    Outcome,
    RequiredIdempotencyKey,
    StoredResponse,
    outcome_response,
    problem_response_for,
    request_fingerprint,
    request_scope,
)
from bazaar.shared.idempotency.store import Operation
from bazaar.shared.problem import (
    PROBLEM_CONTENT_TYPE,
    ProblemError,
    ProblemSpec,
    ServiceUnavailable,
    problem_from_exception,
)
from bazaar.shared.testing.postgres import DatabaseFactory, execute_within
from bazaar.shared.tracecontext import current_trace_id

WIDGET_DDL = """
CREATE TABLE widget (
    id bigserial PRIMARY KEY, shelf text NOT NULL, name text NOT NULL, quantity int NOT NULL
)"""
WAIT = 10.0


class OutOfStock(Exception):
    """Mapped through the app's error map to 409 insufficient-stock."""


class WidgetIn(BaseModel):
    name: str
    quantity: int


@pytest_asyncio.fixture(scope="session")
async def db(database_factory: DatabaseFactory) -> AsyncIterator[Database]:
    url = await database_factory.create("idem_http")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(IDEMPOTENCY_DDL)
        await conn.execute(WIDGET_DDL)
    finally:
        await conn.close()
    database = Database(PoolSettings(dsn=url, max_size=30))
    await database.open()
    yield database
    await database.close()


@pytest.fixture(autouse=True)
async def _clean_tables(db: Database) -> None:
    async with db.connection() as conn:
        await execute_within(conn, "TRUNCATE idempotency_key, widget", db.settings.dsn)


def make_app(store_db: Database) -> FastAPI:
    store = IdempotencyStore(store_db)
    app = FastAPI()
    app.state.error_map = {OutOfStock: ProblemSpec(409, "insufficient-stock", "Insufficient Stock")}
    app.state.hold = None
    app.state.started = asyncio.Event()

    async def render_problem(request: Request, exc: Exception) -> Response:
        problem = problem_from_exception(exc, app.state.error_map)
        assert problem is not None
        problem.instance = request.url.path
        problem.trace_id = current_trace_id()
        headers = exc.headers if isinstance(exc, ProblemError) else None
        return JSONResponse(
            problem.to_dict(), problem.status, headers=headers, media_type=PROBLEM_CONTENT_TYPE
        )

    app.add_exception_handler(ProblemError, render_problem)
    app.add_exception_handler(OutOfStock, render_problem)

    def widget_operation(shelf: str, widget: WidgetIn) -> Operation:
        async def operation(conn: Any) -> StoredResponse:
            if app.state.hold is not None:
                app.state.started.set()
                await app.state.hold.wait()
            if widget.name == "unavailable":
                raise ServiceUnavailable("The warehouse is down.")
            if widget.quantity > 10:
                raise OutOfStock("Only 10 left.")
            widget_id = await conn.fetchval(
                "INSERT INTO widget (shelf, name, quantity) VALUES ($1, $2, $3) RETURNING id",
                shelf,
                widget.name,
                widget.quantity,
            )
            body = {"id": widget_id, "shelf": shelf, **widget.model_dump()}
            location = f"/v1/shelves/{shelf}/widgets/{widget_id}"
            return StoredResponse(201, body, {"Location": location})

        return operation

    async def idempotent(
        request: Request, key: str | None, principal: str, shelf: str, widget: WidgetIn
    ) -> Response:
        operation = widget_operation(shelf, widget)
        if key is None:
            async with store_db.transaction() as conn:
                return outcome_response(Outcome(await operation(conn), replayed=False))
        outcome = await store.run(
            key=key,
            scope=request_scope(request, principal),
            # The scope has the route TEMPLATE, so the path parameters go in the fingerprint.
            fingerprint=request_fingerprint({"shelf": shelf, "body": widget.model_dump()}),
            operation=operation,
            store_error=problem_response_for(request),
        )
        return outcome_response(outcome)

    @app.post("/v1/shelves/{shelf}/widgets")
    async def create_widget(
        request: Request,
        shelf: str,
        widget: WidgetIn,
        key: RequiredIdempotencyKey,
        x_principal: Annotated[str, Header()] = "alice",
    ) -> Response:
        return await idempotent(request, key, x_principal, shelf, widget)

    @app.post("/v1/shelves/{shelf}/notes")
    async def create_note(
        request: Request, shelf: str, widget: WidgetIn, key: OptionalIdempotencyKey
    ) -> Response:
        return await idempotent(request, key, "alice", shelf, widget)

    return app


@pytest_asyncio.fixture
async def app(db: Database) -> FastAPI:
    return make_app(db)


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


WIDGET = {"name": "sprocket", "quantity": 3}
URL = "/v1/shelves/a/widgets"


def keyed(key: str = "key-1", **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers}


async def widget_count(db: Database) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM widget")
        return count


async def key_count(db: Database) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM idempotency_key")
        return count


async def test_a_request_without_the_required_key_is_400_and_nothing_happens(
    db: Database, client: httpx.AsyncClient
) -> None:
    response = await client.post(URL, json=WIDGET)

    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["type"].endswith("/idempotency-key-missing")
    assert await widget_count(db) == 0
    assert await key_count(db) == 0


@pytest.mark.parametrize("key", ["", "has space", "k" * 256])
async def test_an_invalid_key_is_a_422_validation_error_on_the_header(
    db: Database, client: httpx.AsyncClient, key: str
) -> None:
    response = await client.post(URL, json=WIDGET, headers=keyed(key))

    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/validation-error")
    assert [e["loc"] for e in problem["errors"]] == [["header", "Idempotency-Key"]]
    assert await widget_count(db) == 0


async def test_a_replay_returns_the_same_status_body_and_headers_marked_as_replayed(
    db: Database, client: httpx.AsyncClient
) -> None:
    first = await client.post(URL, json=WIDGET, headers=keyed())
    again = await client.post(URL, json=WIDGET, headers=keyed())

    assert first.status_code == again.status_code == 201
    assert first.content == again.content
    assert first.json()["name"] == "sprocket"
    assert first.headers["location"] == again.headers["location"]
    assert first.headers["content-type"] == again.headers["content-type"] == "application/json"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert await widget_count(db) == 1


async def test_the_same_key_with_another_body_or_path_is_a_422_mismatch(
    db: Database, client: httpx.AsyncClient
) -> None:
    await client.post(URL, json=WIDGET, headers=keyed())

    other_body = await client.post(URL, json={**WIDGET, "quantity": 4}, headers=keyed())
    other_shelf = await client.post("/v1/shelves/b/widgets", json=WIDGET, headers=keyed())

    for response in (other_body, other_shelf):
        assert response.status_code == 422
        assert response.json()["type"].endswith("/idempotency-key-mismatch")
    assert await widget_count(db) == 1


async def test_the_same_key_from_another_principal_is_a_new_request(
    db: Database, client: httpx.AsyncClient
) -> None:
    alice = await client.post(URL, json=WIDGET, headers=keyed())
    bob = await client.post(URL, json=WIDGET, headers=keyed(**{"X-Principal": "bob"}))

    assert alice.status_code == bob.status_code == 201
    assert "idempotent-replayed" not in bob.headers
    assert alice.json()["id"] != bob.json()["id"]
    assert await widget_count(db) == 2


async def test_a_request_while_the_first_is_in_flight_is_409_with_retry_after(
    app: FastAPI, db: Database, client: httpx.AsyncClient
) -> None:
    app.state.hold = asyncio.Event()
    first = asyncio.create_task(client.post(URL, json=WIDGET, headers=keyed()))
    async with asyncio.timeout(WAIT):
        await app.state.started.wait()

    second = await client.post(URL, json=WIDGET, headers=keyed())
    app.state.hold.set()
    async with asyncio.timeout(WAIT):
        first_response = await first

    assert second.status_code == 409
    assert second.json()["type"].endswith("/idempotency-key-in-use")
    assert second.headers["retry-after"] == "1"
    assert first_response.status_code == 201
    assert await widget_count(db) == 1


async def test_a_4xx_problem_is_stored_and_replayed_identically(
    db: Database, client: httpx.AsyncClient
) -> None:
    too_many = {"name": "sprocket", "quantity": 11}
    first = await client.post(URL, json=too_many, headers=keyed())
    again = await client.post(URL, json=too_many, headers=keyed())

    assert first.status_code == again.status_code == 409
    assert first.json() == again.json()
    assert again.json()["type"].endswith("/insufficient-stock")
    assert again.json()["instance"] == URL
    assert again.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


async def test_a_5xx_problem_is_not_stored_so_a_retry_runs_again(
    db: Database, client: httpx.AsyncClient
) -> None:
    down = {"name": "unavailable", "quantity": 1}
    first = await client.post(URL, json=down, headers=keyed())
    again = await client.post(URL, json=down, headers=keyed())

    assert first.status_code == again.status_code == 503
    assert "idempotent-replayed" not in again.headers
    assert await key_count(db) == 0


async def test_an_optional_key_may_be_left_out_and_is_honoured_when_given(
    db: Database, client: httpx.AsyncClient
) -> None:
    notes = "/v1/shelves/a/notes"
    unkeyed = [await client.post(notes, json=WIDGET) for _ in range(2)]
    keyed_answers = [await client.post(notes, json=WIDGET, headers=keyed("n-1")) for _ in range(2)]
    invalid = await client.post(notes, json=WIDGET, headers=keyed("bad key"))

    assert [r.status_code for r in unkeyed + keyed_answers] == [201] * 4
    assert [r.headers.get("idempotent-replayed") for r in keyed_answers] == [None, "true"]
    assert invalid.status_code == 422
    assert await widget_count(db) == 3


def test_a_bodyless_stored_answer_is_rendered_without_a_body() -> None:
    response = outcome_response(Outcome(StoredResponse(204, None, {"ETag": '"1"'}), replayed=True))

    assert response.status_code == 204
    assert response.body == b""
    assert response.headers["etag"] == '"1"'
    assert response.headers["idempotent-replayed"] == "true"


def test_the_key_header_is_declared_as_a_header_in_the_openapi_document(app: FastAPI) -> None:
    parameters = app.openapi()["paths"]["/v1/shelves/{shelf}/widgets"]["post"]["parameters"]

    [header] = [p for p in parameters if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert header["description"].startswith("Required.")
