"""GET /v1/orders: own orders newest first, keyset pages, filters, and what an admin sees."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

Placer = Callable[..., Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def orders_of(place: Any, new_product: Any, customer: Any) -> Placer:
    """Place `n` confirmed orders for `subject`, one after the other; return them oldest first."""

    async def placed(subject: str, n: int) -> list[dict[str, Any]]:
        product = await new_product(stock=1000)
        orders = []
        for _ in range(n):
            response = await place(
                [{"product_id": product["id"], "quantity": 1}], headers=customer(subject)
            )
            assert response.status_code == 201, response.text
            orders.append(response.json())
        return orders

    return placed


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_a_customer_lists_only_their_own_orders_newest_first(
    client: httpx.AsyncClient, customer: Any, orders_of: Placer
) -> None:
    mine = await orders_of("alice", 3)
    await orders_of("bob", 2)

    response = await client.get("/v1/orders", headers=customer("alice"))

    assert _ids(response) == [o["id"] for o in reversed(mine)]
    body = response.json()
    assert body["next_cursor"] is None
    assert "link" not in response.headers
    assert body["items"][0] == mine[-1]


async def test_pages_follow_the_link_header_without_skipping_or_repeating_while_orders_arrive(
    client: httpx.AsyncClient, customer: Any, orders_of: Placer
) -> None:
    first_seven = await orders_of("alice", 7)
    seen: list[str] = []

    response = await client.get("/v1/orders", params={"limit": 3}, headers=customer("alice"))
    pages = 1
    seen += _ids(response)
    await orders_of("alice", 2)  # newer than every page still to come
    while response.json()["next_cursor"] is not None:
        link = response.headers["link"]
        match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
        assert match, link
        assert response.json()["next_cursor"] in match.group(1)
        assert "limit=3" in match.group(1)
        response = await client.get(match.group(1), headers=customer("alice"))
        pages += 1
        seen += _ids(response)
        assert pages <= 5, "the pages never end"

    assert seen == [o["id"] for o in reversed(first_seven)]
    assert pages == 3
    assert "link" not in response.headers


async def test_the_status_filter_shows_only_orders_in_that_status(
    client: httpx.AsyncClient, customer: Any, orders_of: Placer, place: Any, new_product: Any
) -> None:
    confirmed = await orders_of("alice", 2)
    scarce = await new_product(stock=0)
    rejected = await place([{"product_id": scarce["id"], "quantity": 1}], headers=customer("alice"))
    assert rejected.status_code == 409
    cancelled = await client.post(
        f"/v1/orders/{confirmed[0]['id']}/cancel", headers=customer("alice")
    )
    assert cancelled.status_code == 200

    def listed(status: str) -> Awaitable[httpx.Response]:
        return client.get("/v1/orders", params={"status": status}, headers=customer("alice"))

    assert _ids(await listed("confirmed")) == [confirmed[1]["id"]]
    assert _ids(await listed("rejected")) == [rejected.json()["order_id"]]
    assert _ids(await listed("cancelled")) == [confirmed[0]["id"]]
    assert _ids(await listed("pending")) == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": -1},
        {"limit": "ten"},
        {"status": "shipped"},
        {"cursor": "not-a-cursor!"},
        {"cursor": "eyJub3QiOiAib3VycyJ9"},
        {"cursor": "W10"},
        {"cursor": "x" * 600},
    ],
    ids=[
        "limit-0",
        "limit-101",
        "limit-negative",
        "limit-word",
        "unknown-status",
        "cursor-not-base64",
        "cursor-not-ours",
        "cursor-empty-list",
        "cursor-too-long",
    ],
)
async def test_a_bad_query_is_422(
    client: httpx.AsyncClient, customer: Any, expect_problem: Any, params: dict[str, Any]
) -> None:
    response = await client.get("/v1/orders", params=params, headers=customer())

    expect_problem(response, 422, "validation-error")


async def test_limit_is_honoured_up_to_100(
    client: httpx.AsyncClient, customer: Any, orders_of: Placer
) -> None:
    await orders_of("alice", 3)

    one = await client.get("/v1/orders", params={"limit": 1}, headers=customer("alice"))
    hundred = await client.get("/v1/orders", params={"limit": 100}, headers=customer("alice"))
    default = await client.get("/v1/orders", headers=customer("alice"))

    assert len(_ids(one)) == 1
    assert one.json()["next_cursor"] is not None
    assert len(_ids(hundred)) == 3
    assert len(_ids(default)) == 3


async def test_the_default_page_holds_20_orders(
    client: httpx.AsyncClient, customer: Any, orders_of: Placer
) -> None:
    await orders_of("alice", 21)

    response = await client.get("/v1/orders", headers=customer("alice"))

    assert len(_ids(response)) == 20
    assert response.json()["next_cursor"] is not None


async def test_an_admin_sees_every_customers_orders_and_filters_by_customer(
    client: httpx.AsyncClient, admin: dict[str, str], orders_of: Placer
) -> None:
    alice = await orders_of("alice", 2)
    bob = await orders_of("bob", 1)

    everyone = await client.get("/v1/orders", headers=admin)
    only_alice = await client.get("/v1/orders", params={"customer_id": "alice"}, headers=admin)

    assert _ids(everyone) == [bob[0]["id"], alice[1]["id"], alice[0]["id"]]
    assert _ids(only_alice) == [alice[1]["id"], alice[0]["id"]]


async def test_a_customer_filtering_by_another_customer_sees_nothing(
    client: httpx.AsyncClient, customer: Any, orders_of: Placer
) -> None:
    alice = await orders_of("alice", 1)
    await orders_of("bob", 1)

    others = await client.get(
        "/v1/orders", params={"customer_id": "bob"}, headers=customer("alice")
    )
    own = await client.get("/v1/orders", params={"customer_id": "alice"}, headers=customer("alice"))

    assert _ids(others) == []
    assert others.json()["next_cursor"] is None
    assert _ids(own) == [alice[0]["id"]]


async def test_an_admins_filtered_list_keeps_its_filter_through_the_next_link(
    client: httpx.AsyncClient, admin: dict[str, str], orders_of: Placer
) -> None:
    alice = await orders_of("alice", 3)
    await orders_of("bob", 2)

    first = await client.get(
        "/v1/orders", params={"customer_id": "alice", "limit": 2}, headers=admin
    )
    rest = await client.get(first.headers["link"].split(">")[0].lstrip("<"), headers=admin)

    assert _ids(first) + _ids(rest) == [o["id"] for o in reversed(alice)]


async def test_listing_without_a_token_is_401(
    client: httpx.AsyncClient, expect_problem: Any
) -> None:
    expect_problem(await client.get("/v1/orders"), 401, "unauthorized")


async def test_listing_without_orders_read_is_403(
    client: httpx.AsyncClient, customer: Any, expect_problem: Any
) -> None:
    response = await client.get("/v1/orders", headers=customer("c", ("orders:write",)))

    expect_problem(response, 403, "forbidden")
