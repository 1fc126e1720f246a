"""Orders keeps the pacts its consumers wrote (contracts/pacts/*-orders.json).

Orders provides orders.order.cancelled. For each message a consumer expects, the verifier
sets up the provider state it names (an order stored through orders' use cases in this run's
database), then orders cancels the order through its real use case, which writes the event
to its outbox; the message is that row as the relay publishes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

from pact.types import Message

from bazaar.orders.adapters.uow import SqlUnitOfWork
from bazaar.orders.service.orders import CANCELLED, cancel_order
from bazaar.shared.db import Database
from bazaar.shared.testing.pacts import (
    MessageMaker,
    StateSetup,
    interactions,
    outbox_message,
    pacts_of_provider,
    verify_provider,
)
from bazaar.shared.testing.postgres import empty_tables

#: Every pact naming orders as its provider.
ORDERS_PACTS = pacts_of_provider("orders")
PRODUCT = UUID("bf15fdf7-d993-4076-9c41-3884767dd1b2")


def provider_states(
    db: Database, hold_order: Callable[..., Awaitable[None]]
) -> Mapping[str, StateSetup]:
    """Each state orders' consumers name, set up from nothing."""

    async def empty() -> None:
        async with db.connection() as conn:
            await empty_tables(conn, db.settings.dsn)

    async def holding_a_reservation(order_id: str, reservation_id: str) -> None:
        await empty()
        await hold_order(UUID(order_id), PRODUCT, reservation_id=UUID(reservation_id))

    async def pending(order_id: str) -> None:
        await empty()
        await hold_order(UUID(order_id), PRODUCT)

    return {"an order holding a reservation": holding_a_reservation, "a pending order": pending}


def messages(db: Database) -> Mapping[str, MessageMaker]:
    """Each message orders' consumers expect: the customer cancels the state's order."""

    async def cancelled(params: Mapping[str, Any]) -> Message:
        async with db.transaction() as conn:
            order_id = UUID(params["order_id"])
            await cancel_order(order_id, viewer="customer-1", uow=SqlUnitOfWork(conn))
            return await outbox_message(conn, CANCELLED)

    return {
        f"{CANCELLED} for an order holding a reservation": cancelled,
        f"{CANCELLED} for an order cancelled while pending": cancelled,
    }


async def test_orders_keeps_every_pact_its_consumers_wrote(
    orders_database: Database, hold_order: Callable[..., Awaitable[None]]
) -> None:
    assert ORDERS_PACTS, "no pact names orders as its provider"
    verification = await verify_provider(
        "orders",
        ORDERS_PACTS,
        states=provider_states(orders_database, hold_order),
        messages=messages(orders_database),
    )

    assert verification.passed, verification.output
    assert sorted(verification.verified) == sorted(interactions(ORDERS_PACTS))
