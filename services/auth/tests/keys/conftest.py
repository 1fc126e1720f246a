"""Signing-key fixtures: a migrated database of their own, settings, a clock, key rings."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from bazaar.auth.adapters.keyring import KeyRing
from bazaar.auth.api import wellknown
from bazaar.auth.config import AuthSettings
from bazaar.shared import migrations
from bazaar.shared.app import database_for
from bazaar.shared.auth import TokenVerifier, VerifierSettings
from bazaar.shared.db import Database
from bazaar.shared.testing.postgres import DatabaseFactory, truncate_all

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
ISSUER = "http://gateway.bazaar.test"
AUTH_BASE_URL = "http://auth.test"
#: Far from the defaults, so a test can tell which setting a value came from.
ACTIVATION_DELAY = timedelta(seconds=600)
CACHE_SECONDS = 10.0
LEEWAY_SECONDS = 10.0
TOKEN_TTL = timedelta(seconds=900)


@dataclass
class Clock:
    """A wall clock that moves only when told."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward."""
        self.now += delta


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def keys_database_url(database_factory: DatabaseFactory) -> str:
    """A database for the key tests of this run, migrated to head."""
    url = await database_factory.create("auth_keys")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    return url


@pytest.fixture
def make_settings(keys_database_url: str) -> Callable[..., AuthSettings]:
    """Build settings over the key database; keyword arguments override."""

    def build(**overrides: Any) -> AuthSettings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": keys_database_url,
            "jwt_issuer": ISSUER,
            "jwt_leeway_seconds": LEEWAY_SECONDS,
            "access_token_ttl_seconds": int(TOKEN_TTL.total_seconds()),
            "key_activation_delay_seconds": int(ACTIVATION_DELAY.total_seconds()),
            "key_cache_seconds": CACHE_SECONDS,
            "key_passphrase": "test-key-passphrase",
            **overrides,
        }
        return AuthSettings(_env_file=None, **values)

    return build


@pytest.fixture
def keys_settings(make_settings: Callable[..., AuthSettings]) -> AuthSettings:
    """Settings of the key tests (ES256)."""
    return make_settings()


@pytest.fixture
def clock() -> Clock:
    """The key rings' clock, starting now."""
    return Clock()


@pytest_asyncio.fixture
async def keys_db(keys_settings: AuthSettings) -> AsyncIterator[Database]:
    """An open pool over the emptied key database."""
    await truncate_all(keys_settings.dsn())
    db = database_for(keys_settings)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def make_keyring(
    keys_db: Database, keys_settings: AuthSettings, clock: Clock
) -> Callable[..., KeyRing]:
    """A key ring over the test pool: the test's settings and clock unless given."""

    def build(settings: AuthSettings | None = None, *, clock_: Clock | None = None) -> KeyRing:
        return KeyRing(keys_db, settings or keys_settings, clock=clock_ or clock)

    return build


@pytest.fixture
def keyring(make_keyring: Callable[..., KeyRing]) -> KeyRing:
    """The key ring of the test (not set up: call ensure_key)."""
    return make_keyring()


def discovery_app(keyring: KeyRing, settings: AuthSettings) -> FastAPI:
    """A bare app serving the discovery routes from this key ring."""
    app = FastAPI()
    app.include_router(wellknown.router)
    app.state.keyring = keyring
    app.state.settings = settings
    return app


@pytest_asyncio.fixture
async def discovery_client(
    keyring: KeyRing, keys_settings: AuthSettings
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the discovery routes over the test's key ring."""
    transport = httpx.ASGITransport(app=discovery_app(keyring, keys_settings))
    async with httpx.AsyncClient(transport=transport, base_url=AUTH_BASE_URL) as client:
        yield client


@pytest_asyncio.fixture
async def verifier(
    discovery_client: httpx.AsyncClient, keys_settings: AuthSettings
) -> AsyncIterator[TokenVerifier]:
    """The shared verifier, fetching the JWKS from the discovery app in-process."""
    settings = VerifierSettings(
        jwks_url=f"{AUTH_BASE_URL}/.well-known/jwks.json", issuer=keys_settings.jwt_issuer
    )
    verifier = TokenVerifier(settings, client=discovery_client)
    try:
        yield verifier
    finally:
        await verifier.aclose()


def access_claims(settings: AuthSettings, subject: str = "user-1") -> dict[str, Any]:
    """The claims of an access token as the token endpoint writes them (real time)."""
    now = int(time.time())
    return {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "exp": now + settings.access_token_ttl_seconds,
        "iat": now,
        "nbf": now,
        "jti": uuid.uuid4().hex,
        "scope": "catalog:read orders:read",
        "client_id": settings.public_client_id,
    }
