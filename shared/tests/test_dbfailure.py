"""Which database errors are the infrastructure's: real errors from a real server first."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from asyncpg.exceptions import _base as asyncpg_base

from bazaar.shared.dbfailure import DatabaseBusy, is_retryable, is_unavailable
from bazaar.shared.testing.postgres import DatabaseFactory


@pytest_asyncio.fixture(loop_scope="session")
async def conn(database_factory: DatabaseFactory) -> AsyncIterator[asyncpg.Connection]:
    url = await database_factory.create("dbfailure")
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


async def _error_of(conn: asyncpg.Connection, query: str, *args: object) -> BaseException:
    with pytest.raises(Exception) as excinfo:
        await conn.fetchval(query, *args)
    return excinfo.value


@pytest.mark.asyncio(loop_scope="session")
async def test_a_connection_terminated_by_the_server_is_unavailable_then_lost(
    conn: asyncpg.Connection, database_factory: DatabaseFactory
) -> None:
    url = await database_factory.create("dbfailure_admin")
    admin = await asyncpg.connect(url)
    try:
        pid = conn.get_server_pid()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    first = await _error_of(conn, "SELECT 1")
    # The server says 57P01 (admin shutdown) or the socket is simply gone: both mean "wait".
    assert is_unavailable(first), repr(first)
    again = await _error_of(conn, "SELECT 1")  # the closed connection, client-side
    assert is_unavailable(again), repr(again)
    assert is_retryable(again)


@pytest.mark.asyncio(loop_scope="session")
async def test_what_the_caller_sent_is_never_the_infrastructures_fault(
    conn: asyncpg.Connection,
) -> None:
    cant_encode = await _error_of(conn, "SELECT $1::int", "not a number")
    # asyncpg reports a value it cannot encode as a DataError (class 22), whichever its base.
    assert isinstance(cant_encode, asyncpg.DataError | asyncpg_base.DataError)
    nul = await _error_of(conn, "SELECT $1::text", "a\x00b")
    division = await _error_of(conn, "SELECT 1 / 0")
    client_side = asyncpg_base.DataError("invalid input for query argument $1")
    # A code bug, not weather: held or answered 503 it would never surface.
    wrong_arguments = await _error_of(conn, "SELECT $1::int, $2::int", 1)
    assert isinstance(wrong_arguments, asyncpg.InterfaceError)
    for error in (cant_encode, nul, division, client_side, wrong_arguments):
        assert not is_unavailable(error), repr(error)
        assert not is_retryable(error), repr(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.CannotConnectNowError("the database system is starting up"),  # 57P03
        asyncpg.AdminShutdownError("terminating connection"),  # 57P01
        asyncpg.TooManyConnectionsError("too many clients"),  # 53300
        asyncpg.ConnectionDoesNotExistError("connection was closed mid-operation"),  # 08003
        asyncpg.InternalClientError("protocol state"),
        ConnectionResetError(),
        TimeoutError(),
        DatabaseBusy(),  # no connection within the acquire timeout
    ],
    ids=type,
)
def test_outages_are_unavailable_and_retryable(error: BaseException) -> None:
    assert is_unavailable(error)
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [asyncpg.SerializationError("could not serialize"), asyncpg.DeadlockDetectedError("x")],
    ids=type,
)
def test_serialization_failures_and_deadlocks_are_retried_but_not_outages(
    error: BaseException,
) -> None:
    assert not is_unavailable(error)
    assert is_retryable(error)


def test_a_constraint_violation_is_the_requests_own() -> None:
    error = asyncpg.UniqueViolationError("duplicate key")
    assert not is_unavailable(error)
    assert not is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [FileNotFoundError(2, "No such file", "/etc/bazaar/key.pem"), PermissionError(13, "denied")],
    ids=type,
)
def test_a_local_os_error_is_a_bug_not_an_outage(error: BaseException) -> None:
    # A missing file or a denied permission is code or configuration: 500, not 503.
    assert not is_unavailable(error)
    assert not is_retryable(error)


def test_a_host_name_that_does_not_resolve_is_an_outage() -> None:
    assert is_unavailable(socket.gaierror(-3, "Temporary failure in name resolution"))
