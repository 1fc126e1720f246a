"""The internal reservation routes: all lines or none, idempotent, released once, announced."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

RESERVATION_FIELDS = {"id", "order_id", "lines", "total_cents", "currency", "status"}
LINE_FIELDS = {"product_id", "sku", "name", "quantity", "unit_price_cents", "currency"}
CLOUDEVENT_ATTRIBUTES = {
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "traceparent",
    "data",
}

Reserve = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
def reserve(client: httpx.AsyncClient, reserver: dict[str, str]) -> Reserve:
    """POST a reservation (a fresh order id and key unless given)."""

    async def post(
        lines: list[dict[str, Any]],
        *,
        order_id: str | None = None,
        key: str | None = "fresh",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = {"order_id": order_id or str(uuid.uuid4()), "lines": lines}
        sent = dict(reserver if headers is None else headers)
        if key is not None:
            sent["Idempotency-Key"] = uuid.uuid4().hex if key == "fresh" else key
        return await client.post("/v1/reservations", json=body, headers=sent)

    return post


def line(product: dict[str, Any], quantity: int = 1) -> dict[str, Any]:
    return {"product_id": product["id"], "quantity": quantity}


async def reservation_count(catalog_db: Any) -> int:
    return int(await catalog_db.fetchval("SELECT count(*) FROM reservation"))


async def test_a_reservation_answers_201_with_priced_lines_total_and_location(
    new_product: Any, reserve: Reserve
) -> None:
    mug = await new_product(sku="MUG-1", name="Mug", price_cents=1290, stock=5)
    tea = await new_product(sku="TEA-1", name="Tea", price_cents=450, stock=9)
    order_id = str(uuid.uuid4())

    response = await reserve([line(mug, 2), line(tea, 3)], order_id=order_id)

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == RESERVATION_FIELDS
    uuid.UUID(body["id"])
    assert body["order_id"] == order_id
    assert body["status"] == "active"
    assert body["currency"] == "EUR"
    assert body["total_cents"] == 2 * 1290 + 3 * 450
    assert body["lines"] == [
        {
            "product_id": mug["id"],
            "sku": "MUG-1",
            "name": "Mug",
            "quantity": 2,
            "unit_price_cents": 1290,
            "currency": "EUR",
        },
        {
            "product_id": tea["id"],
            "sku": "TEA-1",
            "name": "Tea",
            "quantity": 3,
            "unit_price_cents": 450,
            "currency": "EUR",
        },
    ]
    assert all(set(li) == LINE_FIELDS for li in body["lines"])
    assert response.headers["Location"] == f"/v1/reservations/{body['id']}"


async def test_a_reservation_takes_the_stock(
    client: httpx.AsyncClient, new_product: Any, reserve: Reserve, stock_of: Any
) -> None:
    mug = await new_product(stock=5)
    tea = await new_product(stock=9)

    await reserve([line(mug, 5), line(tea, 1)])

    assert await stock_of(mug["id"]) == 0
    assert await stock_of(tea["id"]) == 8
    assert (await client.get(f"/v1/products/{mug['id']}")).json()["stock"] == 0


async def test_the_reserved_price_is_kept_when_the_product_changes_later(
    client: httpx.AsyncClient,
    new_product: Any,
    reserve: Reserve,
    reserver: dict[str, str],
    writer: dict[str, str],
) -> None:
    mug = await new_product(name="Mug", price_cents=1000, stock=5)
    created = (await reserve([line(mug, 1)])).json()
    changed = await client.patch(
        f"/v1/products/{mug['id']}",
        json={"name": "Renamed", "price_cents": 2000},
        headers={**writer, "If-Match": "*"},
    )
    assert changed.status_code == 200

    fetched = await client.get(f"/v1/reservations/{created['id']}", headers=reserver)

    assert fetched.json() == created
    assert fetched.json()["lines"][0]["unit_price_cents"] == 1000


async def test_without_an_idempotency_key_it_answers_400_and_reserves_nothing(
    new_product: Any, reserve: Reserve, stock_of: Any, catalog_db: Any, expect_problem: Any
) -> None:
    mug = await new_product(stock=5)

    response = await reserve([line(mug, 1)], key=None)

    expect_problem(response, 400, "idempotency-key-missing")
    assert await stock_of(mug["id"]) == 5
    assert await reservation_count(catalog_db) == 0


async def test_a_replay_returns_the_first_answer_and_takes_the_stock_once(
    new_product: Any, reserve: Reserve, stock_of: Any, outbox_events: Any
) -> None:
    mug = await new_product(stock=5)
    order_id = str(uuid.uuid4())

    first = await reserve([line(mug, 2)], order_id=order_id, key="order-1-attempt")
    again = await reserve([line(mug, 2)], order_id=order_id, key="order-1-attempt")

    assert first.status_code == again.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    assert await stock_of(mug["id"]) == 3
    assert len(await outbox_events("catalog.stock.reserved")) == 1


async def test_the_same_key_with_another_body_answers_422_mismatch(
    new_product: Any, reserve: Reserve, stock_of: Any, expect_problem: Any
) -> None:
    mug = await new_product(stock=5)
    order_id = str(uuid.uuid4())
    await reserve([line(mug, 2)], order_id=order_id, key="k-1")

    response = await reserve([line(mug, 3)], order_id=order_id, key="k-1")

    expect_problem(response, 422, "idempotency-key-mismatch")
    assert await stock_of(mug["id"]) == 3


async def test_any_short_line_answers_409_listing_every_short_product_and_reserves_nothing(
    new_product: Any,
    reserve: Reserve,
    stock_of: Any,
    catalog_db: Any,
    outbox_events: Any,
    expect_problem: Any,
) -> None:
    plenty = await new_product(stock=100)
    short_a = await new_product(stock=1)
    short_b = await new_product(stock=0)
    exact = await new_product(stock=3)

    response = await reserve([line(plenty, 5), line(short_a, 2), line(exact, 3), line(short_b, 1)])

    problem = expect_problem(response, 409, "insufficient-stock")
    assert sorted(problem["product_ids"]) == sorted([short_a["id"], short_b["id"]])
    assert [await stock_of(p["id"]) for p in (plenty, short_a, short_b, exact)] == [100, 1, 0, 3]
    assert await reservation_count(catalog_db) == 0
    assert await outbox_events("catalog.stock.reserved") == []


async def test_an_unknown_product_answers_409_listing_it(
    new_product: Any, reserve: Reserve, stock_of: Any, expect_problem: Any
) -> None:
    mug = await new_product(stock=5)
    unknown = str(uuid.uuid4())

    response = await reserve([line(mug, 1), {"product_id": unknown, "quantity": 1}])

    problem = expect_problem(response, 409, "insufficient-stock")
    assert problem["product_ids"] == [unknown]
    assert await stock_of(mug["id"]) == 5


async def test_a_deleted_product_cannot_be_reserved(
    client: httpx.AsyncClient,
    new_product: Any,
    reserve: Reserve,
    writer: dict[str, str],
    stock_of: Any,
    expect_problem: Any,
) -> None:
    gone = await new_product(stock=5)
    await client.delete(f"/v1/products/{gone['id']}", headers=writer)

    response = await reserve([line(gone, 1)])

    problem = expect_problem(response, 409, "insufficient-stock")
    assert problem["product_ids"] == [gone["id"]]
    assert await stock_of(gone["id"]) == 5


async def test_a_replayed_409_stays_409_for_its_key(
    new_product: Any, reserve: Reserve, expect_problem: Any
) -> None:
    mug = await new_product(stock=1)
    order_id = str(uuid.uuid4())
    first = await reserve([line(mug, 2)], order_id=order_id, key="k-short")

    again = await reserve([line(mug, 2)], order_id=order_id, key="k-short")

    expect_problem(first, 409, "insufficient-stock")
    assert expect_problem(again, 409, "insufficient-stock") == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_lines_in_two_currencies_answer_422_and_reserve_nothing(
    new_product: Any, reserve: Reserve, stock_of: Any, catalog_db: Any, expect_problem: Any
) -> None:
    eur = await new_product(currency="EUR", stock=5)
    usd = await new_product(currency="USD", stock=5)

    response = await reserve([line(eur, 1), line(usd, 1)])

    expect_problem(response, 422, "validation-error")
    assert await stock_of(eur["id"]) == await stock_of(usd["id"]) == 5
    assert await reservation_count(catalog_db) == 0


async def test_the_reservation_currency_is_that_of_its_lines(
    new_product: Any, reserve: Reserve
) -> None:
    a = await new_product(currency="USD", price_cents=100, stock=5)
    b = await new_product(currency="USD", price_cents=250, stock=5)

    response = await reserve([line(a, 1), line(b, 2)])

    assert response.json()["currency"] == "USD"
    assert response.json()["total_cents"] == 600


def _lines(count: int) -> list[dict[str, Any]]:
    return [{"product_id": str(uuid.uuid4()), "quantity": 1} for _ in range(count)]


_SAME = str(uuid.uuid4())


@pytest.mark.parametrize(
    "body",
    [
        {"order_id": str(uuid.uuid4()), "lines": []},
        {"order_id": str(uuid.uuid4()), "lines": _lines(51)},
        {"order_id": str(uuid.uuid4()), "lines": [{"product_id": _SAME, "quantity": 0}]},
        {"order_id": str(uuid.uuid4()), "lines": [{"product_id": _SAME, "quantity": 1001}]},
        {"order_id": str(uuid.uuid4()), "lines": [{"product_id": _SAME, "quantity": -1}]},
        {"order_id": str(uuid.uuid4()), "lines": [{"product_id": _SAME, "quantity": "1"}]},
        {"order_id": str(uuid.uuid4()), "lines": [{"product_id": _SAME, "quantity": 1.5}]},
        {"order_id": str(uuid.uuid4()), "lines": [{"product_id": _SAME, "quantity": True}]},
        {"order_id": str(uuid.uuid4()), "lines": [{"product_id": _SAME, "quantity": 2**40}]},
        {"order_id": str(uuid.uuid4()), "lines": [{"product_id": _SAME}]},
        {
            "order_id": str(uuid.uuid4()),
            "lines": [{"product_id": _SAME, "quantity": 1}, {"product_id": _SAME, "quantity": 2}],
        },
        {"order_id": str(uuid.uuid4()), "lines": [{"product_id": "not-a-uuid", "quantity": 1}]},
        {"order_id": "not-a-uuid", "lines": [{"product_id": _SAME, "quantity": 1}]},
        {"lines": [{"product_id": _SAME, "quantity": 1}]},
        {"order_id": str(uuid.uuid4())},
        {"order_id": str(uuid.uuid4()), "lines": None},
        {"order_id": str(uuid.uuid4()), "lines": {"product_id": _SAME, "quantity": 1}},
        {
            "order_id": str(uuid.uuid4()),
            "lines": [{"product_id": _SAME, "quantity": 1, "price_cents": 1}],
        },
        {
            "order_id": str(uuid.uuid4()),
            "lines": [{"product_id": _SAME, "quantity": 1}],
            "status": "active",
        },
    ],
    ids=[
        "no-lines",
        "51-lines",
        "quantity-0",
        "quantity-1001",
        "quantity-negative",
        "quantity-string",
        "quantity-float",
        "quantity-boolean",
        "quantity-huge",
        "quantity-missing",
        "duplicate-product",
        "product-id-not-uuid",
        "order-id-not-uuid",
        "order-id-missing",
        "lines-missing",
        "lines-null",
        "lines-not-a-list",
        "unknown-line-field",
        "unknown-field",
    ],
)
async def test_an_invalid_reservation_answers_422_and_reserves_nothing(
    warm_client: httpx.AsyncClient,
    reserver: dict[str, str],
    row_counts: Any,
    expect_problem: Any,
    body: dict[str, Any],
) -> None:
    before = await row_counts()

    response = await warm_client.post(
        "/v1/reservations", json=body, headers={**reserver, "Idempotency-Key": "k"}
    )

    expect_problem(response, 422, "validation-error")
    assert await row_counts() == before


async def test_fifty_lines_of_1000_at_the_highest_price_are_accepted_and_totalled(
    reserve: Reserve, catalog_db: Any, stock_of: Any
) -> None:
    ids = [uuid.uuid4() for _ in range(50)]
    await catalog_db.executemany(
        "INSERT INTO product (id, sku, name, price_cents, currency, stock)"
        " VALUES ($1, $2, 'Bulk', 100000000, 'EUR', 1000)",
        [(pid, f"BULK-{i}") for i, pid in enumerate(ids)],
    )

    response = await reserve([{"product_id": str(pid), "quantity": 1000} for pid in ids])

    assert response.status_code == 201, response.text
    assert len(response.json()["lines"]) == 50
    assert response.json()["total_cents"] == 50 * 1000 * 100_000_000
    assert await stock_of(str(ids[0])) == await stock_of(str(ids[-1])) == 0


async def test_a_reservation_changes_the_product_etag_so_caches_revalidate(
    client: httpx.AsyncClient, new_product: Any, reserve: Reserve
) -> None:
    mug = await new_product(stock=5)
    url = f"/v1/products/{mug['id']}"
    before = (await client.get(url)).headers["ETag"]
    await reserve([line(mug, 2)])

    response = await client.get(url, headers={"If-None-Match": before})

    assert response.status_code == 200
    assert response.json()["stock"] == 3
    assert response.headers["ETag"] != before


@pytest.mark.parametrize(
    "scopes", [("catalog:write",), ("catalog:read",), ("orders:write", "orders:admin"), ()]
)
async def test_a_token_without_catalog_reserve_answers_403_and_reserves_nothing(
    new_product: Any,
    reserve: Reserve,
    auth: Any,
    stock_of: Any,
    expect_problem: Any,
    scopes: tuple[str, ...],
) -> None:
    mug = await new_product(stock=5)

    response = await reserve([line(mug, 1)], headers=auth(*scopes))

    expect_problem(response, 403, "forbidden")
    assert await stock_of(mug["id"]) == 5


async def test_without_a_token_it_answers_401(
    new_product: Any, reserve: Reserve, stock_of: Any, expect_problem: Any
) -> None:
    mug = await new_product(stock=5)

    response = await reserve([line(mug, 1)], headers={})

    expect_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await stock_of(mug["id"]) == 5


@pytest.mark.parametrize(("method", "suffix"), [("GET", "/{id}"), ("DELETE", "/{id}")])
async def test_reading_and_releasing_need_catalog_reserve(
    client: httpx.AsyncClient,
    new_product: Any,
    reserve: Reserve,
    auth: Any,
    stock_of: Any,
    expect_problem: Any,
    method: str,
    suffix: str,
) -> None:
    mug = await new_product(stock=5)
    created = (await reserve([line(mug, 2)])).json()
    url = "/v1/reservations" + suffix.format(id=created["id"])

    anonymous = await client.request(method, url)
    writer = await client.request(method, url, headers=auth("catalog:write"))

    expect_problem(anonymous, 401, "unauthorized")
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    expect_problem(writer, 403, "forbidden")
    assert await stock_of(mug["id"]) == 3


async def test_a_second_reservation_for_the_same_order_under_another_key_answers_409(
    new_product: Any, reserve: Reserve, stock_of: Any, catalog_db: Any, expect_problem: Any
) -> None:
    mug = await new_product(stock=5)
    order_id = str(uuid.uuid4())
    await reserve([line(mug, 2)], order_id=order_id, key="first")

    response = await reserve([line(mug, 1)], order_id=order_id, key="second")

    expect_problem(response, 409, "conflict")
    assert await stock_of(mug["id"]) == 3
    assert await reservation_count(catalog_db) == 1


async def test_releasing_answers_204_and_gives_the_stock_back_once(
    client: httpx.AsyncClient,
    new_product: Any,
    reserve: Reserve,
    reserver: dict[str, str],
    stock_of: Any,
    outbox_events: Any,
) -> None:
    mug = await new_product(stock=5)
    tea = await new_product(stock=5)
    created = (await reserve([line(mug, 2), line(tea, 5)])).json()
    url = f"/v1/reservations/{created['id']}"

    first = await client.delete(url, headers=reserver)
    again = await client.delete(url, headers=reserver)

    assert first.status_code == again.status_code == 204
    assert first.content == again.content == b""
    assert await stock_of(mug["id"]) == 5
    assert await stock_of(tea["id"]) == 5
    assert len(await outbox_events("catalog.stock.released")) == 1


async def test_releasing_an_unknown_reservation_answers_404(
    client: httpx.AsyncClient, reserver: dict[str, str], expect_problem: Any
) -> None:
    response = await client.delete(f"/v1/reservations/{uuid.uuid4()}", headers=reserver)

    expect_problem(response, 404, "not-found")


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_reservation_id_that_is_not_a_uuid_answers_404_or_422(
    client: httpx.AsyncClient, reserver: dict[str, str], method: str
) -> None:
    response = await client.request(method, "/v1/reservations/not-a-uuid", headers=reserver)

    assert response.status_code in (404, 422)
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_reservation_reads_back_as_active_then_released(
    client: httpx.AsyncClient, new_product: Any, reserve: Reserve, reserver: dict[str, str]
) -> None:
    mug = await new_product(stock=5)
    created = (await reserve([line(mug, 2)])).json()
    url = f"/v1/reservations/{created['id']}"

    active = await client.get(url, headers=reserver)
    await client.delete(url, headers=reserver)
    released = await client.get(url, headers=reserver)

    assert active.status_code == 200
    assert active.json() == created
    assert released.status_code == 200
    assert released.json() == {**created, "status": "released"}


async def test_reading_an_unknown_reservation_answers_404(
    client: httpx.AsyncClient, reserver: dict[str, str], expect_problem: Any
) -> None:
    response = await client.get(f"/v1/reservations/{uuid.uuid4()}", headers=reserver)

    expect_problem(response, 404, "not-found")


async def test_the_stock_of_a_product_deleted_meanwhile_still_comes_back(
    client: httpx.AsyncClient,
    new_product: Any,
    reserve: Reserve,
    reserver: dict[str, str],
    writer: dict[str, str],
    stock_of: Any,
) -> None:
    mug = await new_product(stock=5)
    created = (await reserve([line(mug, 2)])).json()
    await client.delete(f"/v1/products/{mug['id']}", headers=writer)

    response = await client.delete(f"/v1/reservations/{created['id']}", headers=reserver)

    assert response.status_code == 204
    assert await stock_of(mug["id"]) == 5


def assert_cloudevent(
    event: dict[str, Any], type_: str, subject: str, response: httpx.Response
) -> None:
    assert set(event) - {"_row_type", "_row_subject"} == CLOUDEVENT_ATTRIBUTES
    assert event["specversion"] == "1.0"
    uuid.UUID(event["id"])
    assert event["source"] == "/bazaar/catalog"
    assert event["type"] == event["_row_type"] == type_
    assert event["subject"] == event["_row_subject"] == subject
    assert datetime.fromisoformat(event["time"].replace("Z", "+00:00")).utcoffset() is not None
    assert event["datacontenttype"] == "application/json"
    assert event["traceparent"].split("-")[1] == response.headers["X-Trace-Id"]


async def test_reserving_and_releasing_write_cloudevents_to_the_outbox(
    client: httpx.AsyncClient,
    new_product: Any,
    reserve: Reserve,
    reserver: dict[str, str],
    outbox_events: Any,
) -> None:
    mug = await new_product(sku="MUG-1", stock=5)
    tea = await new_product(sku="TEA-1", stock=5)
    order_id = str(uuid.uuid4())
    reserving = await reserve([line(mug, 2), line(tea, 1)], order_id=order_id)
    created = reserving.json()
    releasing = await client.delete(f"/v1/reservations/{created['id']}", headers=reserver)

    reserved = await outbox_events("catalog.stock.reserved")
    released = await outbox_events("catalog.stock.released")

    assert len(reserved) == len(released) == 1
    expected_data = {
        "reservation_id": created["id"],
        "order_id": order_id,
        "lines": [
            {"product_id": mug["id"], "sku": "MUG-1", "quantity": 2},
            {"product_id": tea["id"], "sku": "TEA-1", "quantity": 1},
        ],
    }
    for event, type_, response in (
        (reserved[0], "catalog.stock.reserved", reserving),
        (released[0], "catalog.stock.released", releasing),
    ):
        assert_cloudevent(event, type_, created["id"], response)
        assert event["data"] == expected_data
    assert reserved[0]["id"] != released[0]["id"]
