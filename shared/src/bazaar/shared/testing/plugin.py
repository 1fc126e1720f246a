"""The Bazaar pytest plugin: per-run databases, vhosts and names, and token fixtures.

Registered through the `pytest11` entry point of bazaar-shared, so every package's tests
get these fixtures without copying them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator

import pytest
import pytest_asyncio

from bazaar.shared.testing.amqp import amqp_server, amqp_url, broker_outage
from bazaar.shared.testing.infrastructure import Resolved
from bazaar.shared.testing.postgres import DatabaseFactory, resolve_postgres
from bazaar.shared.testing.problems import expect_problem
from bazaar.shared.testing.redis import redis_client, redis_prefix, redis_server
from bazaar.shared.testing.tokens import (  # re-exported fixtures
    TokenIssuer,
    jwks_server,
    token_issuer,
    verifier_settings,
)
from bazaar.shared.testing.watchdog import Watchdog, limit_seconds

__all__ = [
    "TokenIssuer",
    "amqp_server",
    "amqp_url",
    "broker_outage",
    "database_factory",
    "expect_problem",
    "jwks_server",
    "postgres_server",
    "redis_client",
    "redis_prefix",
    "redis_server",
    "test_run_id",
    "token_issuer",
    "verifier_settings",
]


@pytest.fixture(scope="session")
def test_run_id() -> str:
    """A short id unique to this test run; databases, queues and keys are named after it."""
    return f"{uuid.uuid4().hex[:8]}{os.getpid() % 10000:04d}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Resolved]:
    """The PostgreSQL server of this run: $BAZAAR_TEST_DATABASE_URL, local, or a container."""
    resolved = resolve_postgres()
    yield resolved
    resolved.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_factory(
    postgres_server: Resolved, test_run_id: str
) -> AsyncIterator[DatabaseFactory]:
    """Create fresh databases for this run; all of them are dropped when it ends."""
    factory = DatabaseFactory(postgres_server.url, test_run_id)
    yield factory
    await factory.drop_all()


_watchdog = Watchdog(limit_seconds())
_EXIT_STATUS = pytest.StashKey[int]()
_first_run: pytest.Config | None = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Watch each test (setup, call, teardown): a hung one fails instead of stalling the run."""
    if _watchdog.limit <= 0:
        return (yield)
    marker = item.get_closest_marker("watchdog_limit")
    # A marked test gets at least its own limit, never less than the configured one.
    longer = max(float(marker.args[0]), _watchdog.limit) if marker and marker.args else None
    _watchdog.start(item.nodeid, item.path, longer)
    try:
        return (yield)
    finally:
        _watchdog.stop()


def pytest_configure(config: pytest.Config) -> None:
    """Declare the watchdog's marker; note the process's first pytest run (a run inside it,
    by pytest.main, is not it); keep Pact's library from reporting to its makers.

    The Pact library (the contract tests) reports every mock server and verification to an
    outside analytics service unless PACT_DO_NOT_TRACK is set: tests send nothing beyond
    127.0.0.1. Set before any test starts, for the services the tests start as well;
    setdefault, so a value set on purpose stays.
    """
    os.environ.setdefault("PACT_DO_NOT_TRACK", "true")
    config.addinivalue_line(
        "markers",
        "watchdog_limit(seconds): the test watchdog's limit for this test, one known to run "
        "longer than the default (its own deadlines must come first)",
    )
    global _first_run
    if _first_run is None:
        _first_run = config


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup() -> Generator[None, object, object]:
    """The setup phase: the watchdog may interrupt it."""
    with _watchdog.phase():
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call() -> Generator[None, object, object]:
    """The call phase: the watchdog may interrupt it."""
    with _watchdog.phase():
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown() -> Generator[None, object, object]:
    """The teardown phase: the watchdog may interrupt it."""
    with _watchdog.phase():
        return (yield)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """pytest is done: the process must now exit (the watchdog ends it if it does not)."""
    if _watchdog.limit > 0 and config is _first_run:
        _watchdog.watch_exit(config.stash.get(_EXIT_STATUS, 0))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember the run's exit status, for a process the watchdog has to end at exit."""
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def _watched_loop() -> AsyncIterator[None]:
    """Tell the watchdog which event loop the tests run on."""
    _watchdog.loop = asyncio.get_running_loop()
    yield
    _watchdog.loop = None
