"""The auth service's composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from fastapi import FastAPI

from bazaar.auth.adapters.keyring import KeyRing
from bazaar.auth.adapters.passwords import Argon2Passwords
from bazaar.auth.adapters.uow import SqlUnitsOfWork
from bazaar.auth.api import token, users, wellknown
from bazaar.auth.api.errors import ERROR_MAP, oauth_error_response
from bazaar.auth.config import AuthSettings
from bazaar.auth.domain.errors import OAuthError
from bazaar.auth.service.tokens import TokenPolicy, configure_clients, purge_stale
from bazaar.auth.service.users import ensure_admin
from bazaar.shared.app import create_service_app
from bazaar.shared.tasks import periodically

#: How often expired refresh tokens and forgotten login failures are deleted.
HOUSEKEEPING_SECONDS = 3600.0
#: Auth reads its own JWKS through itself, in-process (no network hop to itself).
SELF_BASE_URL = "http://auth.internal"


def token_policy(settings: AuthSettings) -> TokenPolicy:
    """Issuer, audience and lifetimes of the tokens this service signs."""
    return TokenPolicy(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
        public_client_id=settings.public_client_id,
        failures_before_delay=settings.login_failures_before_delay,
        max_delay_seconds=settings.login_delay_max_seconds,
    )


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    """Build the auth app from its settings (read from the environment when not given)."""
    settings = settings or AuthSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        passwords = Argon2Passwords(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            threads=settings.hashing_threads,
            max_wait=settings.hashing_max_wait_seconds,
        )
        keyring = KeyRing(app.state.db, settings)
        app.state.passwords = passwords
        app.state.keyring = keyring
        app.state.token_policy = token_policy(settings)
        uows = SqlUnitsOfWork(app.state.db)
        try:
            await keyring.ensure_key()
            await _bootstrap(settings, uows, passwords)
            async with periodically(
                HOUSEKEEPING_SECONDS, lambda: purge_stale(uows=uows), name="purge auth rows"
            ):
                yield
        finally:
            passwords.close()

    app = create_service_app(
        settings,
        title="Bazaar Auth",
        description="Users, the OAuth2 token endpoint, signing keys and JWKS.",
        routers=[users.router, token.router, wellknown.router],
        error_map=ERROR_MAP,
        lifespan=lifespan,
        jwks_client=lambda app: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=SELF_BASE_URL
        ),
    )
    app.add_exception_handler(OAuthError, oauth_error_response)
    return app


async def _bootstrap(
    settings: AuthSettings, uows: SqlUnitsOfWork, passwords: Argon2Passwords
) -> None:
    """The admin and the service clients of the settings exist once start-up is done."""
    await ensure_admin(
        settings.admin_email,
        settings.admin_name,
        settings.admin_password.get_secret_value(),
        uows=uows,
        passwords=passwords,
    )
    await configure_clients(
        ((c.client_id, c.secret.get_secret_value(), c.scopes) for c in settings.clients),
        uows=uows,
    )
