"""Catalog keeps the pacts its consumers wrote (contracts/pacts/*-catalog.json).

The REAL catalog app serves on a 127.0.0.1 socket over this run's database; Pact replays
each consumer's requests against it after setting up the provider state they name (through
catalog's repositories and use cases), and asks for each message the consumer expects,
which catalog emits through its real code path: the use case writes the event to its outbox,
and the message is that row as the relay publishes it. A provider change that breaks a
consumer fails here: the last tests make two such changes and watch verification fail.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from uuid import UUID

import pytest
import pytest_asyncio
from pact.types import Message
from pydantic import Field

from bazaar.catalog.adapters.uow import SqlUnitOfWork
from bazaar.catalog.api import reservations as reservations_api
from bazaar.catalog.api.schemas import ReservationRead
from bazaar.catalog.app import create_app
from bazaar.catalog.config import CatalogSettings
from bazaar.catalog.service import reservations as reservations_service
from bazaar.catalog.service.reservations import release_for_cancelled_order
from bazaar.shared.testing.pacts import (
    MessageMaker,
    StateSetup,
    Verification,
    interactions,
    outbox_message,
    pacts_of_provider,
    verify_provider,
)
from bazaar.shared.testing.server import serve_on_socket
from bazaar.shared.testing.tokens import TokenIssuer

from .conftest import CatalogStates

#: Every pact naming catalog as its provider.
CATALOG_PACTS = pacts_of_provider("catalog")
STOCK_RELEASED = "catalog.stock.released for a cancelled order's reservation"


@pytest_asyncio.fixture
async def catalog_url(
    catalog_settings: CatalogSettings, catalog_states: CatalogStates
) -> AsyncIterator[str]:
    """The real catalog app, serving on 127.0.0.1 over this run's (emptied) database."""
    async with serve_on_socket(create_app(catalog_settings)) as url:
        yield url


def provider_states(states: CatalogStates) -> Mapping[str, StateSetup]:
    """Each state catalog's consumers name, set up from nothing. A reservation's id is
    catalog's to choose: its state hands it to the pact (`fromProviderState`)."""

    async def products(products: list[dict[str, Any]]) -> None:
        await states.empty()
        await states.products(products)

    async def active(order_id: str, product: dict[str, Any], quantity: int) -> dict[str, str]:
        await states.empty()
        reserved = await states.reserve(order_id=order_id, product=product, quantity=quantity)
        return {"reservation_id": str(reserved)}

    async def released(order_id: str, product: dict[str, Any], quantity: int) -> dict[str, str]:
        reservation = await active(order_id, product, quantity)
        await states.release(reservation["reservation_id"])
        return reservation

    return {
        "products are in stock": products,
        "a product is short of stock": products,
        "products are priced in different currencies": products,
        "a reservation is active": active,
        "a reservation was released": released,
    }


def messages(states: CatalogStates) -> Mapping[str, MessageMaker]:
    """Each message catalog's consumers expect, emitted by the code that emits it."""

    async def stock_released(params: Mapping[str, Any]) -> Message:
        # What catalog does on orders.order.cancelled (its consumer's handler calls this).
        order_id, reservation_id = UUID(params["order_id"]), UUID(params["reservation_id"])
        async with states.db.transaction() as conn:
            await release_for_cancelled_order(order_id, reservation_id, uow=SqlUnitOfWork(conn))
            return await outbox_message(conn, "catalog.stock.released")

    return {STOCK_RELEASED: stock_released}


async def verify_catalog(
    url: str, states: CatalogStates, issuer: TokenIssuer, description: str | None = None
) -> Verification:
    """Replay catalog's pacts; requests carry a live service token of orders'."""
    token = issuer.issue("orders", ["catalog:reserve"], client_id="orders")
    return await verify_provider(
        "catalog",
        CATALOG_PACTS,
        base_url=url,
        states=provider_states(states),
        messages=messages(states),
        headers={"Authorization": f"Bearer {token}"},
        description=description,
    )


async def test_catalog_keeps_every_pact_its_consumers_wrote(
    catalog_url: str, catalog_states: CatalogStates, token_issuer: TokenIssuer
) -> None:
    assert CATALOG_PACTS, "no pact names catalog as its provider"
    verification = await verify_catalog(catalog_url, catalog_states, token_issuer)

    assert verification.passed, verification.output
    assert sorted(verification.verified) == sorted(interactions(CATALOG_PACTS))


class _ReservationReadWithoutTotal(ReservationRead):
    """ReservationRead after someone decided `total_cents` need not be sent."""

    total_cents: int = Field(exclude=True)


async def test_a_reservation_answer_without_total_cents_fails_verification(
    catalog_url: str,
    catalog_states: CatalogStates,
    token_issuer: TokenIssuer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reservations_api, "ReservationRead", _ReservationReadWithoutTotal)

    verification = await verify_catalog(
        catalog_url, catalog_states, token_issuer, description="^a reservation of lines in stock$"
    )

    assert not verification.passed, verification.output
    [(interaction, where, what)] = verification.failures
    assert (interaction, where) == ("a reservation of lines in stock", "$"), what
    assert "total_cents" in what


async def test_a_stock_released_event_with_a_renamed_field_fails_verification(
    catalog_url: str,
    catalog_states: CatalogStates,
    token_issuer: TokenIssuer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event_data = reservations_service.reservation_event_data

    def renamed(reservation: Any) -> dict[str, Any]:
        data = event_data(reservation)
        data["reservation"] = data.pop("reservation_id")
        return data

    monkeypatch.setattr(reservations_service, "reservation_event_data", renamed)

    verification = await verify_catalog(
        catalog_url, catalog_states, token_issuer, description=f"^{re.escape(STOCK_RELEASED)}$"
    )

    assert not verification.passed, verification.output
    [(interaction, where, what)] = verification.failures
    assert (interaction, where) == (STOCK_RELEASED, "$.data"), what
    assert "reservation_id" in what
