"""GET /v1/products: newest first, keyset pages with cursor and Link, and the filters."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
LINK = re.compile(r'^<(?P<target>[^>]+)>;\s*rel="next"$')


async def insert_products(
    catalog_db: Any,
    count: int,
    *,
    same_time: bool = False,
    prefix: str = "BULK",
    **fields: Any,
) -> list[str]:
    """Store `count` products straight in the table, oldest first; return their ids."""
    ids = [uuid.uuid4() for _ in range(count)]
    await catalog_db.executemany(
        "INSERT INTO product (id, sku, name, price_cents, currency, stock, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, 'EUR', $5, $6, $6)",
        [
            (
                pid,
                f"{prefix}-{i:04d}",
                fields.get("name", f"Bulk product {i}"),
                fields.get("price_cents", 100),
                fields.get("stock", 1),
                BASE_TIME if same_time else BASE_TIME + timedelta(seconds=i),
            )
            for i, pid in enumerate(ids)
        ],
    )
    return [str(pid) for pid in ids]


async def walk(client: httpx.AsyncClient, params: dict[str, Any]) -> list[list[str]]:
    """Follow next_cursor from the first page to the last; return the ids of each page."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/products", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


async def test_an_empty_catalog_lists_no_items_and_no_next_page(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/products")

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}
    assert "Link" not in response.headers


async def test_a_list_may_be_kept_by_shared_caches_for_30_seconds(
    client: httpx.AsyncClient, new_product: Any
) -> None:
    await new_product()

    response = await client.get("/v1/products", params={"q": "Test", "limit": 5})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=0, s-maxage=30"


async def test_products_are_listed_newest_first_with_their_fields(
    client: httpx.AsyncClient, new_product: Any
) -> None:
    created = [await new_product(name=f"P{i}") for i in range(3)]

    response = await client.get("/v1/products")

    assert response.status_code == 200
    assert response.json()["items"] == list(reversed(created))


async def test_the_default_page_holds_20_items_and_points_to_the_next(
    client: httpx.AsyncClient, catalog_db: Any
) -> None:
    ids = await insert_products(catalog_db, 25)

    response = await client.get("/v1/products")

    body = response.json()
    assert [item["id"] for item in body["items"]] == list(reversed(ids))[:20]
    assert isinstance(body["next_cursor"], str) and body["next_cursor"]
    assert LINK.match(response.headers["Link"])


@pytest.mark.parametrize("limit", [1, 100])
async def test_limits_at_the_bounds_are_accepted(
    client: httpx.AsyncClient, catalog_db: Any, limit: int
) -> None:
    await insert_products(catalog_db, 101)

    response = await client.get("/v1/products", params={"limit": limit})

    assert response.status_code == 200
    assert len(response.json()["items"]) == limit


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5", ""])
async def test_a_limit_out_of_bounds_answers_422(
    warm_client: httpx.AsyncClient, expect_problem: Any, limit: str
) -> None:
    response = await warm_client.get("/v1/products", params={"limit": limit})

    problem = expect_problem(response, 422, "validation-error")
    assert any(error["loc"] == ["query", "limit"] for error in problem["errors"])


async def test_the_last_page_has_a_null_cursor_and_no_link_even_when_it_is_full(
    client: httpx.AsyncClient, catalog_db: Any
) -> None:
    await insert_products(catalog_db, 10)

    first = await client.get("/v1/products", params={"limit": 5})
    last = await client.get(
        "/v1/products", params={"limit": 5, "cursor": first.json()["next_cursor"]}
    )

    assert "Link" in first.headers
    assert len(last.json()["items"]) == 5
    assert last.json()["next_cursor"] is None
    assert "Link" not in last.headers


async def test_walking_every_page_yields_each_product_exactly_once_in_order(
    client: httpx.AsyncClient, catalog_db: Any
) -> None:
    ids = await insert_products(catalog_db, 45)

    pages = await walk(client, {"limit": 7})

    assert [len(page) for page in pages] == [7, 7, 7, 7, 7, 7, 3]
    assert [pid for page in pages for pid in page] == list(reversed(ids))


async def test_products_created_at_the_same_instant_are_neither_skipped_nor_repeated(
    client: httpx.AsyncClient, catalog_db: Any
) -> None:
    ids = await insert_products(catalog_db, 9, same_time=True)

    pages = await walk(client, {"limit": 2})

    seen = [pid for page in pages for pid in page]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))


async def test_the_link_header_leads_to_the_next_page_and_keeps_the_filters(
    client: httpx.AsyncClient, catalog_db: Any
) -> None:
    await insert_products(catalog_db, 6, name="Blue mug", prefix="MUG")
    await insert_products(catalog_db, 6, name="Teapot", prefix="TEA")

    first = await client.get("/v1/products", params={"limit": 4, "q": "mug"})
    match = LINK.match(first.headers["Link"])
    assert match is not None
    second = await client.get(match["target"])

    assert second.status_code == 200
    assert "cursor=" in match["target"]
    assert len(second.json()["items"]) == 2
    assert set(names(second)) == {"Blue mug"}
    both = [i["id"] for i in first.json()["items"] + second.json()["items"]]
    assert len(set(both)) == 6
    assert second.json()["next_cursor"] is None


async def test_following_link_headers_walks_every_page_once(
    client: httpx.AsyncClient, catalog_db: Any
) -> None:
    ids = await insert_products(catalog_db, 7)
    seen: list[str] = []
    target: str | None = "/v1/products?limit=2"
    while target is not None:
        response = await client.get(target)
        assert response.status_code == 200
        seen += [item["id"] for item in response.json()["items"]]
        match = LINK.match(response.headers.get("Link", ""))
        target = match["target"] if match else None
        assert (target is None) == (response.json()["next_cursor"] is None)
        assert len(seen) <= 7

    assert seen == list(reversed(ids))


async def test_products_created_between_pages_are_neither_skipped_nor_repeated(
    client: httpx.AsyncClient, catalog_db: Any, new_product: Any
) -> None:
    ids = await insert_products(catalog_db, 10)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/products", params=params)).json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        await new_product()
        await new_product()

    assert cursor is None
    assert seen == list(reversed(ids))


async def test_deleted_products_are_not_listed(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str]
) -> None:
    kept = await new_product(name="Kept")
    gone = await new_product(name="Gone")
    await client.delete(f"/v1/products/{gone['id']}", headers=writer)

    response = await client.get("/v1/products")

    assert [item["id"] for item in response.json()["items"]] == [kept["id"]]


async def test_a_product_deleted_between_pages_does_not_disturb_the_walk(
    client: httpx.AsyncClient, catalog_db: Any, writer: dict[str, str]
) -> None:
    ids = await insert_products(catalog_db, 6)
    first = (await client.get("/v1/products", params={"limit": 3})).json()
    await client.delete(f"/v1/products/{first['items'][-1]['id']}", headers=writer)

    second = await client.get("/v1/products", params={"limit": 3, "cursor": first["next_cursor"]})

    assert [item["id"] for item in second.json()["items"]] == list(reversed(ids))[3:]


@pytest.mark.parametrize("q", ["mug", "MUG", "Mug", "uG", "blue m"])
async def test_q_matches_a_case_insensitive_substring_of_the_name(
    client: httpx.AsyncClient, new_product: Any, q: str
) -> None:
    await new_product(name="Blue Mug")
    await new_product(name="mug holder")
    await new_product(name="Teapot")

    response = await client.get("/v1/products", params={"q": q})

    expected = {"Blue Mug"} if q == "blue m" else {"Blue Mug", "mug holder"}
    assert set(names(response)) == expected


async def test_q_is_case_insensitive_beyond_ascii(
    client: httpx.AsyncClient, new_product: Any
) -> None:
    await new_product(name="Éclair tin")
    await new_product(name="Teapot")

    response = await client.get("/v1/products", params={"q": "éCLAIR"})

    assert names(response) == ["Éclair tin"]


@pytest.mark.parametrize(("q", "expected"), [("0%", ["100% cotton"]), ("_", ["snake_case"])])
async def test_q_treats_wildcard_characters_literally(
    client: httpx.AsyncClient, new_product: Any, q: str, expected: list[str]
) -> None:
    for name in ("100% cotton", "1000 cotton", "snake_case", "snakecase"):
        await new_product(name=name)

    response = await client.get("/v1/products", params={"q": q})

    assert names(response) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"min_price_cents": 200}, {"200", "300"}),
        ({"max_price_cents": 200}, {"100", "200"}),
        ({"min_price_cents": 200, "max_price_cents": 200}, {"200"}),
        ({"min_price_cents": 101, "max_price_cents": 299}, {"200"}),
        ({"min_price_cents": 0, "max_price_cents": 100_000_000}, {"100", "200", "300"}),
        ({"min_price_cents": 301}, set()),
    ],
)
async def test_price_bounds_are_inclusive(
    client: httpx.AsyncClient, new_product: Any, params: dict[str, int], expected: set[str]
) -> None:
    for price in (100, 200, 300):
        await new_product(name=str(price), price_cents=price)

    response = await client.get("/v1/products", params=params)

    assert set(names(response)) == expected


@pytest.mark.parametrize("q", ["\x00", "mug\x00"], ids=["nul", "nul-after-text"])
async def test_a_q_no_name_can_hold_answers_no_items_or_422_never_500(
    warm_client: httpx.AsyncClient, expect_problem: Any, q: str
) -> None:
    response = await warm_client.get("/v1/products", params={"q": q})

    if response.status_code == 200:
        assert response.json()["items"] == []
    else:
        expect_problem(response, 422, "validation-error")


async def test_in_stock_true_lists_only_products_with_stock(
    client: httpx.AsyncClient, new_product: Any
) -> None:
    await new_product(name="Has some", stock=1)
    await new_product(name="Sold out", stock=0)

    response = await client.get("/v1/products", params={"in_stock": "true"})

    assert names(response) == ["Has some"]


async def test_filters_combine_and_paginate_together(
    client: httpx.AsyncClient, catalog_db: Any
) -> None:
    wanted = await insert_products(
        catalog_db, 5, name="Red mug", price_cents=500, stock=2, prefix="A"
    )
    await insert_products(catalog_db, 3, name="Red mug", price_cents=500, stock=0, prefix="B")
    await insert_products(catalog_db, 3, name="Red mug", price_cents=50, stock=2, prefix="C")
    await insert_products(catalog_db, 3, name="Teapot", price_cents=500, stock=2, prefix="D")

    params = {"q": "MUG", "min_price_cents": 100, "max_price_cents": 900, "in_stock": "true"}
    pages = await walk(client, {**params, "limit": 2})

    assert [pid for page in pages for pid in page] == list(reversed(wanted))


async def test_a_minimum_above_the_maximum_answers_422(
    client: httpx.AsyncClient, expect_problem: Any
) -> None:
    response = await client.get(
        "/v1/products", params={"min_price_cents": 300, "max_price_cents": 200}
    )

    expect_problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    "params",
    [
        {"min_price_cents": -1},
        {"max_price_cents": -1},
        {"min_price_cents": "cheap"},
        {"in_stock": "maybe"},
    ],
    ids=["min-negative", "max-negative", "min-not-a-number", "in-stock"],
)
async def test_an_invalid_filter_answers_422(
    warm_client: httpx.AsyncClient, expect_problem: Any, params: dict[str, Any]
) -> None:
    response = await warm_client.get("/v1/products", params=params)

    expect_problem(response, 422, "validation-error")


def _b64(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "not base64 at all",
        "Zm9v",
        "%%%",
        _b64([2, "2026-01-01T00:00:00+00:00", str(uuid.uuid4())]),
        _b64([1, "yesterday", str(uuid.uuid4())]),
        _b64([1, "2026-01-01T00:00:00+00:00", "not-a-uuid"]),
        _b64([1, "2026-01-01T00:00:00", str(uuid.uuid4())]),
        _b64([1, "2026-01-01T00:00:00+00:00"]),
        _b64({"created_at": "2026-01-01T00:00:00+00:00"}),
        "A" * 600,
        _b64([1, "0001-01-01T00:00:00+14:00", str(uuid.uuid4())]),
        _b64([1, "9999-12-31T23:59:59-14:00", str(uuid.uuid4())]),
    ],
    ids=[
        "punctuation",
        "spaces",
        "json-but-not-a-cursor",
        "percent",
        "wrong-version",
        "bad-time",
        "bad-uuid",
        "naive-time",
        "too-short",
        "object",
        "too-long",
        "time-before-year-1-in-utc",
        "time-after-year-9999-in-utc",
    ],
)
async def test_a_garbage_cursor_answers_422_validation_error(
    warm_client: httpx.AsyncClient, expect_problem: Any, cursor: str
) -> None:
    response = await warm_client.get("/v1/products", params={"cursor": cursor})

    problem = expect_problem(response, 422, "validation-error")
    assert any(error["loc"] == ["query", "cursor"] for error in problem["errors"]), problem
