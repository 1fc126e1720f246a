"""Reservations racing through the app against the real PostgreSQL: stock never goes below zero."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx

Response = httpx.Response


async def reserve(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    lines: list[tuple[str, int]],
    *,
    order_id: str | None = None,
    key: str | None = None,
) -> Response:
    body = {
        "order_id": order_id or str(uuid.uuid4()),
        "lines": [{"product_id": pid, "quantity": qty} for pid, qty in lines],
    }
    return await client.post(
        "/v1/reservations",
        json=body,
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


def statuses(responses: list[Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


async def active_reservations(catalog_db: Any) -> int:
    return int(
        await catalog_db.fetchval("SELECT count(*) FROM reservation WHERE status = 'active'")
    )


async def test_fifty_single_unit_reservations_against_stock_20_serve_exactly_20(
    client: httpx.AsyncClient,
    new_product: Any,
    reserver: dict[str, str],
    stock_of: Any,
    catalog_db: Any,
    outbox_events: Any,
) -> None:
    product = await new_product(stock=20)

    responses = await asyncio.gather(
        *(reserve(client, reserver, [(product["id"], 1)]) for _ in range(50))
    )

    assert statuses(responses) == {201: 20, 409: 30}, [r.text for r in responses]
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["type"].endswith("/insufficient-stock")
        assert refused.json()["product_ids"] == [product["id"]]
    assert await stock_of(product["id"]) == 0
    assert await active_reservations(catalog_db) == 20
    assert len({r.json()["order_id"] for r in responses if r.status_code == 201}) == 20
    assert len(await outbox_events("catalog.stock.reserved")) == 20


async def test_multi_line_reservations_in_opposite_orders_never_deadlock_or_oversell(
    client: httpx.AsyncClient,
    new_product: Any,
    reserver: dict[str, str],
    stock_of: Any,
    catalog_db: Any,
) -> None:
    a, b, c = [await new_product(stock=10) for _ in range(3)]
    ids = [a["id"], b["id"], c["id"]]
    orders = [ids, list(reversed(ids)), [ids[1], ids[2], ids[0]], [ids[2], ids[0], ids[1]]]

    responses = await asyncio.gather(
        *(reserve(client, reserver, [(pid, 1) for pid in orders[i % 4]]) for i in range(40))
    )

    assert statuses(responses) == {201: 10, 409: 30}, [r.text for r in responses]
    assert [await stock_of(pid) for pid in ids] == [0, 0, 0]
    assert await active_reservations(catalog_db) == 10


async def test_uneven_multi_line_races_keep_stock_and_reservations_in_balance(
    client: httpx.AsyncClient,
    new_product: Any,
    reserver: dict[str, str],
    stock_of: Any,
    catalog_db: Any,
) -> None:
    a, b = await new_product(stock=30), await new_product(stock=30)
    shapes = [[(a["id"], 3), (b["id"], 1)], [(b["id"], 2), (a["id"], 2)], [(a["id"], 1)]]

    responses = await asyncio.gather(*(reserve(client, reserver, shapes[i % 3]) for i in range(45)))

    assert set(statuses(responses)) <= {201, 409}, [r.text for r in responses]
    for pid in (a["id"], b["id"]):
        held = await catalog_db.fetchval(
            "SELECT coalesce(sum(l.quantity), 0) FROM reservation_line l"
            " JOIN reservation r ON r.id = l.reservation_id"
            " WHERE r.status = 'active' AND l.product_id = $1",
            uuid.UUID(pid),
        )
        stock = await stock_of(pid)
        assert stock >= 0
        assert stock + held == 30


async def test_reservations_and_releases_racing_lose_no_units(
    client: httpx.AsyncClient,
    new_product: Any,
    reserver: dict[str, str],
    stock_of: Any,
    catalog_db: Any,
) -> None:
    product = await new_product(stock=10)
    held = [await reserve(client, reserver, [(product["id"], 1)]) for _ in range(10)]
    assert await stock_of(product["id"]) == 0

    releases = [client.delete(f"/v1/reservations/{r.json()['id']}", headers=reserver) for r in held]
    reservations = [reserve(client, reserver, [(product["id"], 1)]) for _ in range(20)]
    responses = await asyncio.gather(*releases, *reservations)

    assert all(r.status_code == 204 for r in responses[:10])
    assert set(statuses(responses[10:])) <= {201, 409}
    served = statuses(responses[10:])[201]
    assert await stock_of(product["id"]) == 10 - served
    assert await active_reservations(catalog_db) == served


async def test_concurrent_releases_of_one_reservation_give_the_stock_back_once(
    client: httpx.AsyncClient,
    new_product: Any,
    reserver: dict[str, str],
    stock_of: Any,
    outbox_events: Any,
) -> None:
    product = await new_product(stock=10)
    created = (await reserve(client, reserver, [(product["id"], 4)])).json()
    url = f"/v1/reservations/{created['id']}"

    responses = await asyncio.gather(*(client.delete(url, headers=reserver) for _ in range(10)))

    assert statuses(responses) == {204: 10}
    assert await stock_of(product["id"]) == 10
    assert len(await outbox_events("catalog.stock.released")) == 1


async def test_concurrent_retries_with_one_key_reserve_once(
    client: httpx.AsyncClient,
    new_product: Any,
    reserver: dict[str, str],
    stock_of: Any,
    catalog_db: Any,
) -> None:
    product = await new_product(stock=10)
    order_id = str(uuid.uuid4())

    responses = await asyncio.gather(
        *(
            reserve(client, reserver, [(product["id"], 3)], order_id=order_id, key="retry-1")
            for _ in range(10)
        )
    )

    assert set(statuses(responses)) <= {201, 409}
    created = [r for r in responses if r.status_code == 201]
    assert created, [r.text for r in responses]
    assert len({r.json()["id"] for r in created}) == 1
    for busy in (r for r in responses if r.status_code == 409):
        assert busy.json()["type"].endswith("/idempotency-key-in-use")
    assert await stock_of(product["id"]) == 7
    assert await active_reservations(catalog_db) == 1


async def test_one_order_reserved_under_many_keys_at_once_is_reserved_once(
    client: httpx.AsyncClient,
    new_product: Any,
    reserver: dict[str, str],
    stock_of: Any,
    catalog_db: Any,
) -> None:
    product = await new_product(stock=10)
    order_id = str(uuid.uuid4())

    responses = await asyncio.gather(
        *(reserve(client, reserver, [(product["id"], 2)], order_id=order_id) for _ in range(8))
    )

    assert statuses(responses) == {201: 1, 409: 7}
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["type"].endswith("/conflict")
    assert await stock_of(product["id"]) == 8
    assert await active_reservations(catalog_db) == 1
