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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Watch each test (setup, call, teardown): a hung one fails instead of stalling the run."""
    if _watchdog.limit <= 0:
        return (yield)
    _watchdog.start(item.nodeid, item.path)
    try:
        return (yield)
    finally:
        _watchdog.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def _watched_loop() -> AsyncIterator[None]:
    """Tell the watchdog which event loop the tests run on."""
    _watchdog.loop = asyncio.get_running_loop()
    yield
    _watchdog.loop = None
