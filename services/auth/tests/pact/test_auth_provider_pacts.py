"""Auth keeps the pacts its consumers wrote (contracts/pacts/*-auth.json).

The REAL auth app serves on a 127.0.0.1 socket over this run's database; Pact replays each
consumer's token requests against it after setting up the service client the pact names,
the way auth's start-up configures its clients.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest_asyncio
from fastapi import FastAPI

from bazaar.auth.adapters.uow import SqlUnitsOfWork
from bazaar.auth.app import create_app
from bazaar.auth.config import AuthSettings
from bazaar.auth.service.tokens import configure_clients
from bazaar.shared.testing.pacts import StateSetup, verify_provider
from bazaar.shared.testing.server import serve_on_socket

PACTS = Path(__file__).resolve().parents[4] / "contracts" / "pacts"
#: Every pact naming auth as its provider.
AUTH_PACTS = sorted(PACTS.glob("*-auth.json"))


@pytest_asyncio.fixture
async def auth_provider(auth_settings: AuthSettings) -> AsyncIterator[tuple[str, FastAPI]]:
    """The real auth app serving on 127.0.0.1, and the app (its database pool)."""
    app = create_app(auth_settings)
    async with serve_on_socket(app) as url:
        yield url, app


def provider_states(app: FastAPI) -> Mapping[str, StateSetup]:
    """Each state auth's consumers name."""

    async def service_client(client_id: str, client_secret: str, scope: str) -> None:
        clients = [(client_id, client_secret, tuple(scope.split()))]
        await configure_clients(clients, uows=SqlUnitsOfWork(app.state.db))

    return {"the service client exists": service_client}


def _interactions(pacts: list[Path]) -> list[str]:
    return [i["description"] for p in pacts for i in json.loads(p.read_text())["interactions"]]


async def test_auth_keeps_every_pact_its_consumers_wrote(
    auth_provider: tuple[str, FastAPI],
) -> None:
    assert AUTH_PACTS, "no pact names auth as its provider"
    url, app = auth_provider
    verification = await verify_provider(
        "auth", AUTH_PACTS, base_url=url, states=provider_states(app)
    )

    assert verification.passed, verification.output
    verified = [r["description"] for r in verification.results["interactionResults"]]
    assert sorted(verified) == sorted(_interactions(AUTH_PACTS))
