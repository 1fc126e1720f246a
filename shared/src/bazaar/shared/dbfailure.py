"""Which database errors are the infrastructure's (wait, then retry) and which the caller's.

One table for every place that must tell them apart: the HTTP error handler (503 with
`Retry-After`, never 500), the idempotency store and the event consumers (requeue without
spending an attempt). Server errors are classified by SQLSTATE class, client-side ones by
asyncpg's exception classes.
"""

from __future__ import annotations

import socket

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

from bazaar.shared.problem import ServiceUnavailable

#: SQLSTATE classes that say the server cannot serve us now: connection exception (08),
#: insufficient resources (53), operator intervention (57: starting, shutting down,
#: cancelled by an operator), system error (58).
UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})
#: Serialization failure and deadlock: the same transaction may well succeed if run again.
RETRY_STATES = frozenset({"40001", "40P01"})
#: Client-side errors about what was sent (a value asyncpg cannot encode, a bad setting):
#: the caller's fault, however often it is tried again.
_CALLERS_FAULT: tuple[type[BaseException], ...] = (
    asyncpg_base.DataError,
    asyncpg_base.ClientConfigurationError,
    asyncpg_base.UnsupportedClientFeatureError,
)
#: Client-side errors of a lost or broken connection (a protocol state left behind by a
#: connection cut mid-statement), and the socket's own errors.
#: Only the network's OSErrors: a FileNotFoundError or PermissionError is a code or
#: configuration bug (500 with traceback), not an outage to wait out.
_LOST_CONNECTION: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    TimeoutError,  # a statement or connect that ran out of time
    socket.gaierror,  # the database's host name does not resolve (DNS down)
    asyncpg.InternalClientError,
)
#: asyncpg's InterfaceError is mostly the caller's (a wrong number of query arguments, a
#: released connection used, …); only these say the connection or pool is gone. asyncpg
#: raises them with no subclass or attribute to test (`Connection._check_open`, the
#: protocol's `_check_state`, `Pool._check_init`), so their text is matched; a lost socket
#: itself is ConnectionDoesNotExistError (SQLSTATE 08003), classified above.
_CLOSED_INTERFACE_MESSAGES = ("connection is closed", "pool is closed", "pool is closing")


class DatabaseBusy(ServiceUnavailable):
    """No database connection could be had within the acquire timeout (503, like any outage)."""

    default_detail = "The database is not available right now."


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a server error ('' for anything else)."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")
    return ""


def is_unavailable(exc: BaseException) -> bool:
    """Answer whether `exc` says the database cannot be used right now (nobody's fault)."""
    if isinstance(exc, DatabaseBusy):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return sqlstate(exc)[:2] in UNAVAILABLE_CLASSES
    if isinstance(exc, _CALLERS_FAULT):
        return False
    if isinstance(exc, asyncpg.InterfaceError):
        return str(exc).endswith(_CLOSED_INTERFACE_MESSAGES)
    return isinstance(exc, _LOST_CONNECTION)


def is_retryable(exc: BaseException) -> bool:
    """Answer whether running the same work again later may succeed (outage or conflict)."""
    return is_unavailable(exc) or sqlstate(exc) in RETRY_STATES
