"""Orders' contract with catalog, written by orders' tests: contracts/pacts/orders-catalog.json.

What orders' catalog client sends to reserve and release stock and what it reads of the
answers, and catalog.stock.released as orders' consumer reads it. Each test drives the REAL
code against the pact: the catalog client (token, retries, breaker) against Pact's mock
catalog, the subscription handler (on this run's database) on the pact's message. The last
test does it all in one go and fails unless the committed pact is the one it writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

import pytest
from pact import Pact, generate, match
from pact.match.matcher import GenericMatcher

from bazaar.orders.adapters.catalog import CatalogClient
from bazaar.orders.adapters.consumers import SUBSCRIPTIONS
from bazaar.orders.adapters.uow import SqlUnitOfWork
from bazaar.orders.domain.model import OrderLine, PricedReservation, RequestedLine
from bazaar.orders.service.ports import Invalid, OutOfStock, Reserved
from bazaar.shared.db import Database
from bazaar.shared.events import CLOUDEVENTS_CONTENT_TYPE
from bazaar.shared.problem import PROBLEM_BASE_URI
from bazaar.shared.testing.pacts import (
    ROUTING_KEY,
    apply_event,
    check_pact,
    deliver,
    mock_provider,
    new_pact,
    write_pact,
)

UUID_PATTERN = "[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"

#: Any service token will do: catalog's verification sends a live one instead.
BEARER = match.regex("Bearer orders-service-token", regex=r"^Bearer \S+$")

MUG: dict[str, Any] = {
    "id": "0037cc6c-0dc2-4e23-b5ca-df6a1a648cb1",
    "sku": "PACT-MUG",
    "name": "Pact mug",
    "price_cents": 1250,
    "currency": "EUR",
    "stock": 10,
}
SPOON: dict[str, Any] = {
    "id": "c0aea698-e13e-4598-a101-0d4dd0070876",
    "sku": "PACT-SPOON",
    "name": "Pact spoon",
    "price_cents": 300,
    "currency": "EUR",
    "stock": 5,
}
SCARCE: dict[str, Any] = {
    **MUG,
    "id": "aa9a1773-62b1-4a6c-8a87-63f0c2a0abd6",
    "sku": "PACT-SCARCE",
    "stock": 1,
}
IN_DOLLARS: dict[str, Any] = {
    **SPOON,
    "id": "af94e34e-3371-4d0a-9957-6cc816bbe798",
    "currency": "USD",
}

RESERVED_ORDER = UUID("5034e864-2972-439a-947a-27b35df5a2d2")
RESERVATION = UUID("277e7faa-f5e8-4b5a-a97c-264147358de8")
SHORT_ORDER = UUID("3cc07797-b6cf-4e9e-9665-689e4ca3b81f")
MIXED_ORDER = UUID("c59bedcb-676a-4f98-a572-fab79840f806")
#: The params of "a reservation is active" / "a reservation was released": the order it is
#: for and what it holds. Its id is catalog's choice: the state hands it back as
#: `reservation_id` (Pact's `fromProviderState`); the ids below are the consumer's examples.
ACTIVE: dict[str, Any] = {
    "order_id": "401ad4a5-ec3b-417e-884e-0e1ec176cac6",
    "product": MUG,
    "quantity": 2,
}
ACTIVE_RESERVATION = "435d3d11-071f-4c18-b214-e2e2d50ba051"
RELEASED: dict[str, Any] = {**ACTIVE, "order_id": "d987aac2-10e8-4015-bac0-0303d46b0a90"}
RELEASED_RESERVATION = "51a0a6a7-8022-4b07-8879-97b4a31d0e2e"
#: The reservation of an order orders cancelled, which catalog then releases.
CANCELLED: dict[str, Any] = {**ACTIVE, "order_id": "25617109-b46e-4ed4-88ff-718e14fb5425"}
CANCELLED_RESERVATION = "76df87ab-149e-444a-9f34-404bb2755f31"
RELEASED_EVENT = "b9e6b962-4f04-4c65-8809-ebf9ae11848f"


def _reservation_request(order_id: UUID, lines: list[tuple[dict[str, Any], int]]) -> Any:
    return {
        "order_id": str(order_id),
        "lines": [{"product_id": product["id"], "quantity": n} for product, n in lines],
    }


def _priced_line(product: dict[str, Any], quantity: int) -> dict[str, Any]:
    """A line of catalog's answer: the product and quantity asked for, priced by catalog."""
    return {
        "product_id": product["id"],
        "quantity": quantity,
        "sku": match.str(product["sku"]),
        "name": match.str(product["name"]),
        "unit_price_cents": match.int(product["price_cents"]),
    }


def _reservation_call(pact: Pact, description: str, order_id: UUID) -> Any:
    """POST /v1/reservations as the client sends it (the body is added by the caller)."""
    return (
        pact.upon_receiving(description)
        .with_request("POST", "/v1/reservations")
        .with_header("Authorization", BEARER)
        .with_header(
            "Idempotency-Key", match.regex(f"order-{order_id}", regex=f"^order-{UUID_PATTERN}$")
        )
    )


def _problem(slug: str) -> Any:
    return match.regex(PROBLEM_BASE_URI + slug, regex=f"^.*/{slug}$")


def reservation_in_stock(pact: Pact) -> None:
    """Lines in stock: 201 with the reservation, each line priced, and the total."""
    lines = [(MUG, 2), (SPOON, 1)]
    (
        _reservation_call(pact, "a reservation of lines in stock", RESERVED_ORDER)
        .given("products are in stock", products=[MUG, SPOON])
        .with_body(_reservation_request(RESERVED_ORDER, lines), content_type="application/json")
        .will_respond_with(201)
        .with_body(
            {
                "id": match.uuid(str(RESERVATION)),
                "lines": [_priced_line(product, n) for product, n in lines],
                "total_cents": match.int(2800),
                "currency": match.regex("EUR", regex="^[A-Z]{3}$"),
            },
            content_type="application/json",
        )
    )


async def reserve_in_stock(catalog: CatalogClient) -> None:
    outcome = await catalog.reserve(
        RESERVED_ORDER, [RequestedLine(UUID(MUG["id"]), 2), RequestedLine(UUID(SPOON["id"]), 1)]
    )
    assert outcome == Reserved(
        PricedReservation(
            id=RESERVATION,
            lines=(
                OrderLine(UUID(MUG["id"]), 2, "PACT-MUG", "Pact mug", 1250),
                OrderLine(UUID(SPOON["id"]), 1, "PACT-SPOON", "Pact spoon", 300),
            ),
            total_cents=2800,
            currency="EUR",
        )
    )


def reservation_short_of_stock(pact: Pact) -> None:
    """A line short of stock: 409 insufficient-stock naming the short product."""
    (
        _reservation_call(pact, "a reservation with a line short of stock", SHORT_ORDER)
        .given("a product is short of stock", products=[SCARCE])
        .with_body(
            _reservation_request(SHORT_ORDER, [(SCARCE, 3)]), content_type="application/json"
        )
        .will_respond_with(409)
        .with_body(
            {"type": _problem("insufficient-stock"), "product_ids": [SCARCE["id"]]},
            content_type="application/problem+json",
        )
    )


async def reserve_short_of_stock(catalog: CatalogClient) -> None:
    outcome = await catalog.reserve(SHORT_ORDER, [RequestedLine(UUID(SCARCE["id"]), 3)])
    assert outcome == OutOfStock((UUID(SCARCE["id"]),))


def reservation_in_two_currencies(pact: Pact) -> None:
    """Lines priced in two currencies: 422 validation-error, with a detail for the order."""
    lines = [(MUG, 1), (IN_DOLLARS, 1)]
    (
        _reservation_call(pact, "a reservation of lines in two currencies", MIXED_ORDER)
        .given("products are priced in different currencies", products=[MUG, IN_DOLLARS])
        .with_body(_reservation_request(MIXED_ORDER, lines), content_type="application/json")
        .will_respond_with(422)
        .with_body(
            {
                "type": _problem("validation-error"),
                "detail": match.str("All lines of a reservation must share one currency."),
            },
            content_type="application/problem+json",
        )
    )


async def reserve_in_two_currencies(catalog: CatalogClient) -> None:
    outcome = await catalog.reserve(
        MIXED_ORDER, [RequestedLine(UUID(MUG["id"]), 1), RequestedLine(UUID(IN_DOLLARS["id"]), 1)]
    )
    assert outcome == Invalid("All lines of a reservation must share one currency.")


def _reservation_path(example: str) -> Any:
    """A reservation's path: `example` here, the id the provider state hands back there."""
    return GenericMatcher(
        "regex",
        f"/v1/reservations/{example}",
        regex=f"^/v1/reservations/{UUID_PATTERN}$",
        generator=generate.provider_state("/v1/reservations/${reservation_id}"),
    )


def _release_call(
    pact: Pact, description: str, state: str, params: dict[str, Any], example: str
) -> None:
    (
        pact.upon_receiving(description)
        .given(state, params)
        .with_request("DELETE", _reservation_path(example))
        .with_header("Authorization", BEARER)
        .will_respond_with(204)
    )


def release_of_an_active_reservation(pact: Pact) -> None:
    """Releasing a reservation: 204."""
    _release_call(
        pact,
        "the release of an active reservation",
        "a reservation is active",
        ACTIVE,
        ACTIVE_RESERVATION,
    )


async def release_active(catalog: CatalogClient) -> None:
    assert await catalog.release(UUID(ACTIVE_RESERVATION)) is True


def release_of_a_released_reservation(pact: Pact) -> None:
    """Releasing again (orders retries releases): 204 again."""
    _release_call(
        pact,
        "the release of a released reservation",
        "a reservation was released",
        RELEASED,
        RELEASED_RESERVATION,
    )


async def release_released(catalog: CatalogClient) -> None:
    assert await catalog.release(UUID(RELEASED_RESERVATION)) is True


#: Each HTTP interaction orders relies on, and the client call that relies on it.
CALLS: Mapping[str, tuple[Callable[[Pact], None], Callable[[CatalogClient], Awaitable[None]]]] = {
    "lines in stock are reserved at catalog's prices": (reservation_in_stock, reserve_in_stock),
    "a line short of stock is out of stock": (reservation_short_of_stock, reserve_short_of_stock),
    "lines in two currencies are invalid": (
        reservation_in_two_currencies,
        reserve_in_two_currencies,
    ),
    "a reservation is released": (release_of_an_active_reservation, release_active),
    "a released reservation is released again": (
        release_of_a_released_reservation,
        release_released,
    ),
}


def stock_released(pact: Pact) -> None:
    """catalog.stock.released: the CloudEvent orders' consumer decodes, and what it reads."""
    (
        pact.upon_receiving("catalog.stock.released for a cancelled order's reservation", "Async")
        .given("a reservation is active", CANCELLED)
        .with_body(
            {
                "specversion": "1.0",
                "id": match.uuid(RELEASED_EVENT),
                "source": match.str("/bazaar/catalog"),
                "type": "catalog.stock.released",
                "data": {
                    "order_id": match.uuid(CANCELLED["order_id"]),
                    "reservation_id": match.uuid(CANCELLED_RESERVATION),
                },
            },
            content_type=CLOUDEVENTS_CONTENT_TYPE,
        )
        .with_metadata({ROUTING_KEY: "catalog.stock.released"})
    )


async def _is_stock_released(db: Database, order_id: UUID) -> bool:
    async with db.connection() as conn:
        order = await SqlUnitOfWork(conn).orders.get(order_id)
    assert order is not None
    return order.stock_released


async def _consume_stock_released(pact: Pact, db: Database, hold_order: Any) -> None:
    """Orders holds a cancelled order whose stock catalog then releases: the message marks
    the order's stock released."""
    order_id = UUID(CANCELLED["order_id"])
    reservation_id = UUID(CANCELLED_RESERVATION)
    await hold_order(order_id, UUID(MUG["id"]), reservation_id=reservation_id, cancelled=True)
    assert await _is_stock_released(db, order_id) is False

    async def consume(body: bytes, metadata: Mapping[str, Any]) -> None:
        await apply_event(body, metadata, service="orders", subscriptions=SUBSCRIPTIONS, db=db)

    await deliver(pact, consume)
    assert await _is_stock_released(db, order_id) is True


@pytest.mark.parametrize(("interaction", "call"), CALLS.values(), ids=CALLS.keys())
async def test_the_catalog_client_keeps_to_the_contract(
    interaction: Callable[[Pact], None],
    call: Callable[[CatalogClient], Awaitable[None]],
    catalog_client: Callable[[str], CatalogClient],
) -> None:
    pact = new_pact("orders", "catalog")
    interaction(pact)
    with mock_provider(pact) as url:
        await call(catalog_client(url))


async def test_catalog_stock_released_marks_the_cancelled_orders_stock_released(
    orders_database: Database, hold_order: Any
) -> None:
    pact = new_pact("orders", "catalog")
    stock_released(pact)
    await _consume_stock_released(pact, orders_database, hold_order)


async def test_the_committed_pact_is_the_one_orders_tests_write(
    catalog_client: Callable[[str], CatalogClient],
    orders_database: Database,
    hold_order: Any,
) -> None:
    # A mock provider per call: the two releases differ only in their provider state (the
    # path is any reservation's), so one mock serving both would answer both with the first.
    calls = []
    for interaction, call in CALLS.values():
        pact = new_pact("orders", "catalog")
        interaction(pact)
        with mock_provider(pact) as url:
            await call(catalog_client(url))
        calls.append(pact)
    events = new_pact("orders", "catalog")
    stock_released(events)
    await _consume_stock_released(events, orders_database, hold_order)

    drift = check_pact(write_pact(*calls, events), written_by=__file__)
    assert drift is None, drift
