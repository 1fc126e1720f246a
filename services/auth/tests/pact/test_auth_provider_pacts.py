"""Auth keeps the pacts its consumers wrote (contracts/pacts/*-auth.json).

The REAL auth app serves on a 127.0.0.1 socket over this run's database, emptied first (the
conftest's `auth_app`); Pact replays each consumer's token requests against it after setting
up the service client the pact names, the way auth's start-up configures its clients (which
also retires every other client: nothing another test stored is in the way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest_asyncio
from fastapi import FastAPI

from bazaar.auth.adapters.uow import SqlUnitsOfWork
from bazaar.auth.service.tokens import configure_clients
from bazaar.shared.testing.pacts import (
    StateSetup,
    interactions,
    pacts_of_provider,
    verify_provider,
)
from bazaar.shared.testing.server import serve_on_socket

#: Every pact naming auth as its provider.
AUTH_PACTS = pacts_of_provider("auth")


@pytest_asyncio.fixture
async def auth_provider(auth_app: FastAPI) -> AsyncIterator[tuple[str, FastAPI]]:
    """The real auth app over an emptied database, serving on 127.0.0.1, and the app (its
    database pool)."""
    async with serve_on_socket(auth_app) as url:
        yield url, auth_app


def provider_states(app: FastAPI) -> Mapping[str, StateSetup]:
    """Each state auth's consumers name."""

    async def service_client(client_id: str, client_secret: str, scope: str) -> None:
        clients = [(client_id, client_secret, tuple(scope.split()))]
        await configure_clients(clients, uows=SqlUnitsOfWork(app.state.db))

    return {"the service client exists": service_client}


async def test_auth_keeps_every_pact_its_consumers_wrote(
    auth_provider: tuple[str, FastAPI],
) -> None:
    assert AUTH_PACTS, "no pact names auth as its provider"
    url, app = auth_provider
    verification = await verify_provider(
        "auth", AUTH_PACTS, base_url=url, states=provider_states(app)
    )

    assert verification.passed, verification.output
    assert sorted(verification.verified) == sorted(interactions(AUTH_PACTS))
