"""Catalog test fixtures: a migrated database per run, emptied before each test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

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
from bazaar.shared.testing.postgres import DatabaseFactory, truncate_all
from bazaar.shared.testing.tokens import TokenIssuer


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
