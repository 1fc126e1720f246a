"""Catalog's contract with orders, written by catalog's tests: contracts/pacts/catalog-orders.json.

Catalog consumes orders.order.cancelled: it decodes the CloudEvent, and reads `order_id`
and `reservation_id` (null when orders cancelled before it learnt of a reservation) to give
the order's stock back. Each test runs catalog's REAL consumer (decode, routing, inbox,
handler, on this run's database) on the pact's messages; the last one also checks the
committed pact is the one they write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from pact import Pact, match

from bazaar.catalog.adapters.events import SUBSCRIPTIONS
from bazaar.shared.events import CLOUDEVENTS_CONTENT_TYPE
from bazaar.shared.testing.pacts import (
    ROUTING_KEY,
    apply_event,
    check_pact,
    deliver,
    new_pact,
    write_pact,
)

from .conftest import CatalogStates

CANCELLED = "orders.order.cancelled"

MUG: dict[str, Any] = {
    "id": "5bdfabfd-2c5a-438e-917b-740a10870e72",
    "sku": "PACT-MUG",
    "name": "Pact mug",
    "price_cents": 1250,
    "currency": "EUR",
    "stock": 10,
}
SPOON: dict[str, Any] = {**MUG, "id": "906dcb3c-b332-4d05-b72e-4e0cf0758df7", "sku": "PACT-SPOON"}
RESERVED: dict[str, Any] = {
    "order_id": "5503decc-e24b-4a4a-8e93-6f2d84ed8167",
    "reservation_id": "c9335cb4-e848-4f24-9c64-10a55ecd3c83",
}
#: Orders cancelled it while its reservation call was in flight: catalog reserved anyway.
UNRESERVED: dict[str, Any] = {
    "order_id": "3bd5aa58-1eae-4019-a889-2bd45b040f44",
    "reservation_id": "5faff335-78b9-4191-b82b-53927fcdcb5d",
}


def _cancelled(event_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": match.uuid(event_id),
        "source": match.str("/bazaar/orders"),
        "type": CANCELLED,
        "data": data,
    }


def cancelled_holding_a_reservation(pact: Pact) -> None:
    """The order held a reservation: its id travels with the event."""
    (
        pact.upon_receiving(f"{CANCELLED} for an order holding a reservation", "Async")
        .given("an order holding a reservation", RESERVED)
        .with_body(
            _cancelled(
                "6a67cc81-8c7c-4e0c-a177-75fd8d64515d",
                {
                    "order_id": match.uuid(RESERVED["order_id"]),
                    "reservation_id": match.uuid(RESERVED["reservation_id"]),
                },
            ),
            content_type=CLOUDEVENTS_CONTENT_TYPE,
        )
        .with_metadata({ROUTING_KEY: CANCELLED})
    )


def cancelled_while_pending(pact: Pact) -> None:
    """The order was pending: `reservation_id` is null, catalog looks the order up."""
    (
        pact.upon_receiving(f"{CANCELLED} for an order cancelled while pending", "Async")
        .given("a pending order", order_id=UNRESERVED["order_id"])
        .with_body(
            _cancelled(
                "712bb17b-802a-43c3-953c-39a875ecb2ed",
                {"order_id": match.uuid(UNRESERVED["order_id"]), "reservation_id": None},
            ),
            content_type=CLOUDEVENTS_CONTENT_TYPE,
        )
        .with_metadata({ROUTING_KEY: CANCELLED})
    )


#: Each message catalog relies on, the reservation it must give back on it, and its product.
MESSAGES: Mapping[str, tuple[Callable[[Pact], None], dict[str, Any], dict[str, Any]]] = {
    "an order holding a reservation": (cancelled_holding_a_reservation, RESERVED, MUG),
    "an order cancelled while pending": (cancelled_while_pending, UNRESERVED, SPOON),
}


async def _consume(
    pact: Pact, states: CatalogStates, held: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """Catalog holds each reservation (2 of 10 in stock); once the messages are consumed none
    is held any more, the stock is back, and catalog.stock.released announces each release."""
    for reservation, product in held:
        await states.reservation_under(**reservation, product=product, quantity=2)
        assert await states.stock(product["id"]) == 8
    db = states.db

    async def consume(body: bytes, metadata: Mapping[str, Any]) -> None:
        await apply_event(body, metadata, service="catalog", subscriptions=SUBSCRIPTIONS, db=db)

    await deliver(pact, consume)
    released = await states.events("catalog.stock.released")
    assert sorted(e["data"]["reservation_id"] for e in released) == sorted(
        reservation["reservation_id"] for reservation, _ in held
    )
    for reservation, product in held:
        assert await states.is_active(reservation["reservation_id"]) is False
        assert await states.stock(product["id"]) == 10


@pytest.mark.parametrize(
    ("interaction", "reservation", "product"), MESSAGES.values(), ids=MESSAGES.keys()
)
async def test_orders_order_cancelled_gives_the_orders_stock_back(
    interaction: Callable[[Pact], None],
    reservation: dict[str, Any],
    product: dict[str, Any],
    catalog_states: CatalogStates,
) -> None:
    pact = new_pact("catalog", "orders")
    interaction(pact)
    await _consume(pact, catalog_states, [(reservation, product)])


async def test_the_committed_pact_is_the_one_catalogs_tests_write(
    catalog_states: CatalogStates,
) -> None:
    pact = new_pact("catalog", "orders")
    for interaction, _, _ in MESSAGES.values():
        interaction(pact)
    await _consume(pact, catalog_states, [(r, p) for _, r, p in MESSAGES.values()])

    drift = check_pact(write_pact(pact), written_by=__file__)
    assert drift is None, drift
