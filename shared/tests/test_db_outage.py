"""A service under a failing database: 503 service-unavailable with Retry-After, never 500,
and ready again within 3 s of the database coming back (API.md, "Service availability").

Failures are real: a server answering 57P03 "starting up" at connect, backends terminated
with pg_terminate_backend() mid-statement and while idle, and a chaos proxy in front of the
run's PostgreSQL that refuses and resets connections.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import APIRouter, FastAPI, Request
from pydantic_settings import SettingsConfigDict

from bazaar.shared.app import create_service_app
from bazaar.shared.auth import VerifierSettings
from bazaar.shared.db import Database, DatabaseBusy, PoolSettings
from bazaar.shared.dbfailure import is_unavailable
from bazaar.shared.deps import Db
from bazaar.shared.problem import PROBLEM_CONTENT_TYPE
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.chaos import ChaosProxy, Mode, chaos_proxy
from bazaar.shared.testing.postgres import DatabaseFactory

#: API.md: ready again (readyz 200, requests served) within 3 s of the dependency's return.
RECOVERY_BUDGET = 3.0
_SSL_REQUEST_CODE = 80877103


class OutageSettings(ServiceSettings):
    """Settings of the throwaway service these tests break."""

    model_config = SettingsConfigDict(env_prefix="OUTAGESVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "outage"


router = APIRouter()


@router.get("/notes/count")
async def count_notes(db: Db) -> dict[str, int]:
    """Count rows (one short statement)."""
    async with db.connection() as conn:
        return {"count": int(await conn.fetchval("SELECT count(*) FROM note"))}


@router.post("/notes/slow")
async def slow_note(db: Db) -> dict[str, int]:
    """Insert a row in a transaction that lasts a while (to be cut mid-statement)."""
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO note (body) VALUES ('slow')")
        await conn.execute("SELECT pg_sleep(30)")
    return {"count": 1}


@router.get("/notes/pid")
async def backend_pid(request: Request, db: Db) -> dict[str, int]:
    """Tell which backend served (to see connections being replaced)."""
    async with db.connection() as conn:
        return {"pid": int(await conn.fetchval("SELECT pg_backend_pid()"))}


# --- a server that is "starting up" ------------------------------------------------------


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = b"".join(
        code + value.encode() + b"\0"
        for code, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    payload = fields + b"\0"
    return b"E" + struct.pack("!I", len(payload) + 4) + payload


@asynccontextmanager
async def starting_up_server() -> AsyncIterator[str]:
    """A server speaking just enough protocol to answer every connect with 57P03."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                if length == 8 and struct.unpack("!I", body)[0] == _SSL_REQUEST_CODE:
                    writer.write(b"N")  # no TLS here; the client goes on in plain text
                    await writer.drain()
                    continue
                writer.write(_error_response("57P03", "the database system is starting up"))
                await writer.drain()
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"postgresql://postgres:pw@127.0.0.1:{port}/starting"
    finally:
        server.close()
        await server.wait_closed()


# --- fixtures ----------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create(
        "outage", ddl=["CREATE TABLE note (id bigserial PRIMARY KEY, body text NOT NULL)"]
    )


@pytest_asyncio.fixture
async def proxy(database_url: str) -> AsyncIterator[ChaosProxy]:
    """The run's PostgreSQL behind a chaos proxy (set back to forwarding at the end)."""
    parts = urlsplit(database_url)
    async with chaos_proxy(f"http://{parts.hostname}:{parts.port or 5432}") as chaos:
        yield chaos


def through(database_url: str, proxy: ChaosProxy) -> str:
    """The database URL pointed at the proxy."""
    parts = urlsplit(database_url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{proxy.port}" if auth else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def make_app(verifier_settings: VerifierSettings, database_url: str, **overrides: Any) -> FastAPI:
    settings = OutageSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=database_url,
        db_pool_max=4,
        db_acquire_timeout=1.0,
        jwt_jwks_url=verifier_settings.jwks_url,
        jwt_issuer=verifier_settings.issuer,
        jwt_audience=verifier_settings.audience,
        **overrides,
    )
    return create_service_app(
        settings,
        title="Outage",
        description="A throwaway service whose database fails.",
        routers=[router],
        error_map={},
    )


@pytest_asyncio.fixture
async def client(
    verifier_settings: VerifierSettings, database_url: str, proxy: ChaosProxy
) -> AsyncIterator[httpx.AsyncClient]:
    """A started app whose database connections go through the proxy."""
    app = make_app(verifier_settings, through(database_url, proxy))
    async with serve_in_process(app) as c:
        yield c


def assert_unavailable(response: httpx.Response) -> None:
    """503 service-unavailable problem with Retry-After, no internals."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.headers["Retry-After"].isdigit()
    body = response.json()
    assert body["type"].endswith("/service-unavailable")
    assert body["status"] == 503
    assert "asyncpg" not in response.text and "127.0.0.1" not in response.text


async def seconds_until(check: Callable[[], Awaitable[bool]], budget: float = 10.0) -> float:
    """How long until `check` holds (polling every 50 ms); fails after `budget`."""
    started = time.monotonic()
    while time.monotonic() - started < budget:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    pytest.fail(f"did not hold within {budget} s")


async def terminate_backends(database_url: str, where: str = "") -> int:
    """pg_terminate_backend() every other backend of the database; return how many."""
    admin = await asyncpg.connect(database_url)
    try:
        sql = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()" + where
        )
        killed = int(await admin.fetchval(sql))
        # Wait until they are gone, so the clients have had their connection cut.
        for _ in range(100):
            left = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()" + where
            )
            if left == 0:
                break
            await asyncio.sleep(0.02)
        return killed
    finally:
        await admin.close()


async def wait_for_statement(database_url: str, like: str, budget: float = 10.0) -> None:
    """Wait until a backend of the database is running a statement matching `like`."""
    admin = await asyncpg.connect(database_url)
    try:
        sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE $1"
        )
        for _ in range(int(budget / 0.02)):
            if await admin.fetchval(sql, like):
                return
            await asyncio.sleep(0.02)
        pytest.fail(f"no statement like {like!r} ran within {budget} s")
    finally:
        await admin.close()


# --- the pool ----------------------------------------------------------------------------


async def test_a_database_starting_up_is_database_busy_not_an_unexpected_error() -> None:
    async with starting_up_server() as url:
        db = Database(PoolSettings(dsn=url, min_size=0, acquire_timeout=2.0))
        await db.open()
        try:
            with pytest.raises(DatabaseBusy) as caught:
                async with db.connection():
                    pytest.fail("a connection was handed out")
            assert await db.ping() is False
        finally:
            await db.close()

    assert isinstance(caught.value.__cause__, asyncpg.CannotConnectNowError)
    assert caught.value.status == 503
    assert caught.value.slug == "service-unavailable"
    assert caught.value.headers["Retry-After"] == "1"


async def test_a_connection_cut_mid_statement_is_not_handed_out_again(database_url: str) -> None:
    db = Database(PoolSettings(dsn=database_url, min_size=1, max_size=1, acquire_timeout=2.0))
    await db.open()
    try:

        async def sleep_in_backend() -> None:
            async with db.connection() as conn:
                await conn.execute("SELECT pg_sleep(30)")

        task = asyncio.create_task(sleep_in_backend())
        await wait_for_statement(database_url, "%pg_sleep(30)%")
        await terminate_backends(database_url, " AND query LIKE '%pg_sleep(30)%'")
        with pytest.raises(Exception) as cut:
            await asyncio.wait_for(task, 5)
        assert is_unavailable(cut.value)  # 57P01 or "closed in the middle of operation"

        async with db.connection() as conn:  # the one slot of the pool works again at once
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def backend_pid_after(
    db: Database, fails: Callable[[asyncpg.Connection], Awaitable[None]]
) -> tuple[int, int]:
    """The backend pid of the pool's one connection before and after `fails` raised in it."""
    async with db.connection() as conn:
        before = int(await conn.fetchval("SELECT pg_backend_pid()"))
    with pytest.raises((asyncpg.PostgresError, TimeoutError, DatabaseBusy)):
        async with db.connection() as conn:
            await fails(conn)
    async with db.connection() as conn:
        after = int(await conn.fetchval("SELECT pg_backend_pid()"))
    return before, after


async def statement_timeout(conn: asyncpg.Connection) -> None:
    await conn.execute("SET statement_timeout = '50ms'")
    try:
        await conn.execute("SELECT pg_sleep(5)")  # 57014 query_canceled
    finally:
        await conn.execute("RESET statement_timeout")


async def other_io_times_out(_conn: asyncpg.Connection) -> None:
    raise TimeoutError("a remote call made while holding the connection ran out of time")


async def command_timeout(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_sleep(5)", timeout=0.05)


@pytest.mark.parametrize(
    "fails", [statement_timeout, other_io_times_out, command_timeout], ids=lambda f: f.__name__
)
async def test_a_healthy_connection_is_kept_after_an_error_that_is_not_its_fault(
    database_url: str, fails: Callable[[asyncpg.Connection], Awaitable[None]]
) -> None:
    db = Database(PoolSettings(dsn=database_url, min_size=1, max_size=1, acquire_timeout=2.0))
    await db.open()
    try:
        before, after = await backend_pid_after(db, fails)
    finally:
        await db.close()

    assert after == before  # no reconnect per timeout under load


async def test_a_nested_acquire_that_finds_no_connection_keeps_the_outer_one(
    database_url: str,
) -> None:
    db = Database(PoolSettings(dsn=database_url, min_size=1, max_size=1, acquire_timeout=0.2))
    await db.open()
    try:

        async def nested_acquire(_conn: asyncpg.Connection) -> None:
            async with db.connection():  # the pool's only connection is ours: DatabaseBusy
                pass

        before, after = await backend_pid_after(db, nested_acquire)
    finally:
        await db.close()

    assert after == before


# --- the app -----------------------------------------------------------------------------


async def test_an_app_whose_database_is_starting_up_answers_503_with_retry_after(
    verifier_settings: VerifierSettings,
) -> None:
    async with starting_up_server() as url:
        app = make_app(verifier_settings, url, db_pool_min=0)
        async with serve_in_process(app) as client:
            response = await client.get("/notes/count")
            ready = await client.get("/readyz")

    assert_unavailable(response)
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "failing"


async def test_a_statement_cut_by_pg_terminate_backend_answers_503_not_500(
    client: httpx.AsyncClient, database_url: str
) -> None:
    request = asyncio.create_task(client.post("/notes/slow"))
    await wait_for_statement(database_url, "%pg_sleep(30)%")
    killed = await terminate_backends(database_url, " AND query LIKE '%pg_sleep(30)%'")
    response = await asyncio.wait_for(request, 10)

    assert killed == 1
    assert_unavailable(response)
    # The next request is served: the dead connection was not handed out again.
    assert (await client.get("/notes/count")).status_code == 200


async def test_requests_after_idle_connections_were_terminated_are_served(
    client: httpx.AsyncClient, database_url: str
) -> None:
    await asyncio.gather(*(client.get("/notes/pid") for _ in range(4)))
    assert await terminate_backends(database_url) >= 1

    async def all_served() -> bool:
        answers = await asyncio.gather(*(client.get("/notes/count") for _ in range(8)))
        # A request racing the pool's notice of a terminated connection may get 503 (the
        # contract's answer while the database "comes back"); never anything else.
        assert {a.status_code for a in answers} <= {200, 503}
        return all(a.status_code == 200 for a in answers)

    # The contract: served again within 3 s of the database's return (here: at once).
    assert await seconds_until(all_served, budget=RECOVERY_BUDGET) < RECOVERY_BUDGET


@pytest.mark.parametrize("mode", [Mode.REFUSE, Mode.RESET])
async def test_an_unreachable_database_answers_503_and_is_ready_within_3_s_of_its_return(
    client: httpx.AsyncClient, proxy: ChaosProxy, mode: Mode
) -> None:
    assert (await client.get("/notes/count")).status_code == 200

    await proxy.set_mode(mode)
    try:
        outage = await asyncio.gather(*(client.get("/notes/count") for _ in range(4)))
        written = await client.post("/notes/slow")
        not_ready = await client.get("/readyz")
    finally:
        await proxy.set_mode(Mode.FORWARD)
    back_at = time.monotonic()

    async def ready_and_serving() -> bool:
        ready = await client.get("/readyz")
        served = await client.get("/notes/count")
        return ready.status_code == 200 and served.status_code == 200

    await seconds_until(ready_and_serving, budget=RECOVERY_BUDGET)
    recovered_in = time.monotonic() - back_at
    # Once ready, every request is served: no dead pooled connection is handed out.
    after = await asyncio.gather(*(client.get("/notes/count") for _ in range(8)))

    for response in [*outage, written]:
        assert_unavailable(response)
    assert not_ready.status_code == 503
    assert not_ready.headers["Retry-After"].isdigit()
    assert recovered_in < RECOVERY_BUDGET
    assert [a.status_code for a in after] == [200] * 8
