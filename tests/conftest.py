"""System-test fixtures: the databases of every service, migrated once per run."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import pytest_asyncio

from bazaar.auth.cli import MIGRATIONS_DIR as AUTH_MIGRATIONS
from bazaar.catalog.cli import MIGRATIONS_DIR as CATALOG_MIGRATIONS
from bazaar.orders.cli import MIGRATIONS_DIR as ORDERS_MIGRATIONS
from bazaar.shared import migrations
from bazaar.shared.testing.postgres import DatabaseFactory


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def system_databases(database_factory: DatabaseFactory) -> dict[str, str]:
    """A migrated database per service for the system tests of this run."""
    urls = {
        "auth": await database_factory.create("system_auth"),
        "catalog": await database_factory.create("system_catalog"),
        "orders": await database_factory.create("system_orders"),
    }
    await asyncio.to_thread(migrations.upgrade, AUTH_MIGRATIONS, urls["auth"])
    await asyncio.to_thread(migrations.upgrade, CATALOG_MIGRATIONS, urls["catalog"])
    await asyncio.to_thread(migrations.upgrade, ORDERS_MIGRATIONS, urls["orders"])
    return urls


@pytest.fixture(autouse=True)
def environment_restored() -> Iterator[None]:
    """Every test leaves os.environ as it found it.

    `scripts/bazaar_suite.py`'s build() exports make up's development defaults to os.environ
    (its programs read them); a test of it that did not undo that gave every later test of
    the run those settings (GATEWAY_AMQP_URL on the default vhost: the system test's gateway
    cache then trusted a subscription that heard nothing, and served stale stock).
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
