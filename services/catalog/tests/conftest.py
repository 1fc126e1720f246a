"""Catalog test fixtures: a migrated database per run, emptied before each test."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from bazaar.catalog.app import create_app
from bazaar.catalog.cli import MIGRATIONS_DIR
from bazaar.catalog.config import CatalogSettings
from bazaar.shared import migrations
from bazaar.shared.auth import VerifierSettings
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.postgres import DatabaseFactory, json_connection, truncate_all
from bazaar.shared.testing.tokens import JwksServer, TokenIssuer

#: The scope of product writers, and the scope of the orders service's reservation token.
WRITE = "catalog:write"
RESERVE = "catalog:reserve"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def catalog_database_url(database_factory: DatabaseFactory) -> str:
    """A database for this run, migrated to head."""
    url = await database_factory.create("catalog")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    return url


@pytest.fixture
def catalog_settings(
    catalog_database_url: str, verifier_settings: VerifierSettings
) -> CatalogSettings:
    """Settings pointing at the run's database and the test JWKS."""
    return CatalogSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=catalog_database_url,
        db_pool_max=20,
        jwt_jwks_url=verifier_settings.jwks_url,
        jwt_issuer=verifier_settings.issuer,
        jwt_audience=verifier_settings.audience,
    )


@pytest_asyncio.fixture
async def catalog_app(catalog_settings: CatalogSettings) -> FastAPI:
    """A catalog app over an emptied database (not started)."""
    await truncate_all(catalog_settings.dsn())
    return create_app(catalog_settings)


@pytest_asyncio.fixture
async def client(catalog_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to a started catalog app."""
    async with serve_in_process(catalog_app, base_url="http://catalog.test") as c:
        yield c


@pytest.fixture
def auth(token_issuer: TokenIssuer) -> Callable[..., dict[str, str]]:
    """Authorization headers for a token with the given scopes."""

    def headers(*scopes: str, subject: str = "user-1") -> dict[str, str]:
        return {"Authorization": f"Bearer {token_issuer.issue(subject, scopes)}"}

    return headers


# --- Added for the catalog suite: clients by role, products, the database, problem checks ---


@pytest.fixture
def writer(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    """Headers of an admin-like caller that may write products."""
    return auth(WRITE, subject="admin-1")


@pytest.fixture
def reserver(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    """Headers of the orders service's token (catalog:reserve only)."""
    return auth(RESERVE, subject="svc-orders")


@pytest.fixture
def new_product(
    client: httpx.AsyncClient, writer: dict[str, str]
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Create a product through the API (unique sku unless given) and return its body."""
    numbers = itertools.count(1)

    async def create(**fields: Any) -> dict[str, Any]:
        body = {
            "sku": f"SKU-{next(numbers):04d}",
            "name": "Test product",
            "price_cents": 1000,
            "currency": "EUR",
            "stock": 10,
            **fields,
        }
        response = await client.post("/v1/products", json=body, headers=writer)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    return create


@pytest_asyncio.fixture
async def catalog_db(catalog_app: FastAPI, catalog_settings: CatalogSettings) -> AsyncIterator[Any]:
    """A plain asyncpg connection to the (emptied) catalog database, for checking what is stored."""
    async with json_connection(catalog_settings.dsn()) as conn:
        yield conn


@pytest.fixture
def stock_of(catalog_db: Any) -> Callable[[str], Awaitable[int]]:
    """The stock stored for a product id (deleted products included)."""

    async def stock(product_id: str) -> int:
        value = await catalog_db.fetchval(
            "SELECT stock FROM product WHERE id = $1", uuid.UUID(product_id)
        )
        assert value is not None, f"no product {product_id} in the database"
        return int(value)

    return stock


@pytest.fixture
def outbox_events(catalog_db: Any) -> Callable[..., Awaitable[list[dict[str, Any]]]]:
    """The events in the outbox (oldest first), optionally of one type, as stored CloudEvents.

    Each item is the stored event plus `_row_type`/`_row_subject`, the outbox row's columns.
    """

    async def events(type: str | None = None) -> list[dict[str, Any]]:
        rows = await catalog_db.fetch(
            "SELECT type, subject, event FROM outbox"
            " WHERE $1::text IS NULL OR type = $1::text ORDER BY position",
            type,
        )
        return [{**r["event"], "_row_type": r["type"], "_row_subject": r["subject"]} for r in rows]

    return events


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def warm_client(
    catalog_database_url: str, jwks_server: JwksServer
) -> AsyncIterator[httpx.AsyncClient]:
    """A client to a catalog app started once per run, over the run's database.

    The database is NOT emptied for its tests: use it only where the contents do not matter
    (validation and authorization sweeps), so those many cases stay fast.
    """
    settings = CatalogSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=catalog_database_url,
        db_pool_max=5,
        jwt_jwks_url=jwks_server.url,
        jwt_issuer=TokenIssuer.ISSUER,
        jwt_audience=TokenIssuer.AUDIENCE,
    )
    async with serve_in_process(create_app(settings), base_url="http://catalog.test") as c:
        yield c


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def warm_db(catalog_database_url: str) -> AsyncIterator[Any]:
    """A connection to the run's catalog database that is never emptied (see `warm_client`)."""
    conn = await asyncpg.connect(catalog_database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def row_counts(warm_db: Any) -> Callable[[], Awaitable[dict[str, int]]]:
    """How many products, reservations, outbox events and idempotency keys are stored."""

    async def counts() -> dict[str, int]:
        row = await warm_db.fetchrow(
            "SELECT (SELECT count(*) FROM product) AS product,"
            " (SELECT count(*) FROM reservation) AS reservation,"
            " (SELECT count(*) FROM outbox) AS outbox,"
            " (SELECT count(*) FROM idempotency_key) AS idempotency_key"
        )
        return dict(row)

    return counts
