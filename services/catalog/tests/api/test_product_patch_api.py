"""PATCH /v1/products/{id}: JSON merge patch under If-Match, and its event."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

MERGE_PATCH = "application/merge-patch+json"


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def current_etag(client: httpx.AsyncClient, product: dict[str, Any]) -> str:
    response = await client.get(f"/v1/products/{product['id']}")
    assert response.status_code == 200
    return response.headers["ETag"]


async def patch(
    client: httpx.AsyncClient,
    product: dict[str, Any],
    body: Any,
    headers: dict[str, str],
    *,
    if_match: str | None = "current",
    content_type: str = MERGE_PATCH,
) -> httpx.Response:
    sent = {**headers, "Content-Type": content_type}
    if if_match == "current":
        sent["If-Match"] = await current_etag(client, product)
    elif if_match is not None:
        sent["If-Match"] = if_match
    return await client.patch(
        f"/v1/products/{product['id']}", content=json.dumps(body).encode(), headers=sent
    )


async def warm_product(warm_client: httpx.AsyncClient, writer: dict[str, str]) -> dict[str, Any]:
    """A product on the warm app (its database is shared by the run: the sku is unique)."""
    body = {"sku": f"P-{uuid.uuid4().hex}", "name": "Mug", "price_cents": 100, "currency": "EUR"}
    response = await warm_client.post("/v1/products", json=body, headers=writer)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_a_merge_patch_changes_only_the_fields_sent(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str]
) -> None:
    product = await new_product(
        sku="MUG-1", name="Mug", description="Blue", price_cents=1000, stock=3
    )
    etag = await current_etag(client, product)

    response = await patch(client, product, {"price_cents": 1200}, writer, if_match=etag)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["price_cents"] == 1200
    unchanged = ("id", "sku", "name", "description", "currency", "stock", "created_at")
    assert {k: body[k] for k in unchanged} == {k: product[k] for k in unchanged}
    assert body["version"] == product["version"] + 1
    assert moment(body["updated_at"]) >= moment(product["updated_at"])
    assert response.headers["ETag"] != etag
    assert response.headers["Cache-Control"]
    fetched = await client.get(f"/v1/products/{product['id']}")
    assert fetched.json() == body
    assert fetched.headers["ETag"] == response.headers["ETag"]


async def test_every_patchable_field_can_change_at_once(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str]
) -> None:
    product = await new_product()
    changes = {
        "name": "New name",
        "description": "New words",
        "price_cents": 1,
        "currency": "USD",
        "stock": 999,
    }

    response = await patch(client, product, changes, writer)

    assert response.status_code == 200
    assert {k: response.json()[k] for k in changes} == changes
    assert response.json()["version"] == product["version"] + 1


@pytest.mark.parametrize("content_type", [MERGE_PATCH, "application/json"])
async def test_both_merge_patch_and_plain_json_are_accepted(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], content_type: str
) -> None:
    product = await new_product()

    response = await patch(client, product, {"name": "Renamed"}, writer, content_type=content_type)

    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"


async def test_a_null_description_clears_it(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str]
) -> None:
    product = await new_product(description="Some words")

    response = await patch(client, product, {"description": None}, writer)

    assert response.status_code == 200
    assert response.json()["description"] is None


async def test_stock_can_be_set_through_a_patch(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], stock_of: Any
) -> None:
    product = await new_product(stock=3)

    response = await patch(client, product, {"stock": 0}, writer)

    assert response.status_code == 200
    assert await stock_of(product["id"]) == 0


async def test_a_patch_writes_an_updated_event_listing_only_the_changed_fields(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], outbox_events: Any
) -> None:
    product = await new_product(name="Mug", price_cents=1000, stock=3)

    response = await patch(
        client, product, {"name": "Mug", "price_cents": 1500, "stock": 4}, writer
    )

    events = await outbox_events("catalog.product.updated")
    assert len(events) == 1
    event = events[0]
    assert event["subject"] == event["_row_subject"] == product["id"]
    assert sorted(event["data"]["changed"]) == ["price_cents", "stock"]
    data = {k: v for k, v in event["data"].items() if k != "changed"}
    assert data == response.json()


async def test_a_patch_that_changes_nothing_keeps_the_version_and_etag(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], outbox_events: Any
) -> None:
    product = await new_product(name="Mug")
    etag = await current_etag(client, product)

    response = await patch(client, product, {"name": "Mug"}, writer, if_match=etag)

    assert response.status_code == 200
    assert response.json()["version"] == product["version"]
    assert response.headers["ETag"] == etag
    assert await outbox_events("catalog.product.updated") == []


async def test_without_if_match_it_answers_428_precondition_required(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], expect_problem: Any
) -> None:
    product = await new_product(name="Mug")

    response = await patch(client, product, {"name": "Cup"}, writer, if_match=None)

    expect_problem(response, 428, "precondition-required")
    assert (await client.get(f"/v1/products/{product['id']}")).json()["name"] == "Mug"


async def test_a_stale_if_match_answers_412(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], expect_problem: Any
) -> None:
    product = await new_product(name="Mug")
    stale = await current_etag(client, product)
    assert (await patch(client, product, {"name": "Cup"}, writer)).status_code == 200

    response = await patch(client, product, {"name": "Bowl"}, writer, if_match=stale)

    expect_problem(response, 412, "precondition-failed")
    assert (await client.get(f"/v1/products/{product['id']}")).json()["name"] == "Cup"


@pytest.mark.parametrize(
    "if_match",
    ['"not-the-etag"', "W/{etag}", "garbage", ""],
    ids=["other-tag", "weak-form-of-current", "unparsable", "empty"],
)
async def test_an_if_match_that_does_not_strongly_match_is_refused(
    client: httpx.AsyncClient,
    new_product: Any,
    writer: dict[str, str],
    expect_problem: Any,
    if_match: str,
) -> None:
    product = await new_product(name="Mug")
    etag = await current_etag(client, product)

    response = await patch(
        client, product, {"name": "Cup"}, writer, if_match=if_match.format(etag=etag)
    )

    assert response.status_code in (412, 428)
    slug = "precondition-failed" if response.status_code == 412 else "precondition-required"
    expect_problem(response, response.status_code, slug)
    assert (await client.get(f"/v1/products/{product['id']}")).json()["name"] == "Mug"


@pytest.mark.parametrize("if_match", ["*", '"other", {etag}'], ids=["star", "in-a-list"])
async def test_if_match_star_or_a_list_holding_the_etag_is_accepted(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], if_match: str
) -> None:
    product = await new_product()
    etag = await current_etag(client, product)

    response = await patch(
        client, product, {"name": "Cup"}, writer, if_match=if_match.format(etag=etag)
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": str(uuid.uuid4())}, "id"),
        ({"version": 9}, "version"),
        ({"sku": "NEW-SKU"}, "sku"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        ({"updated_at": "2020-01-01T00:00:00Z"}, "updated_at"),
        ({"colour": "red"}, "colour"),
        ({"name": None}, None),
        ({"price_cents": None}, None),
        ({"currency": None}, None),
        ({"stock": None}, None),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"price_cents": -1}, "price_cents"),
        ({"price_cents": 100_000_001}, "price_cents"),
        ({"price_cents": "12"}, "price_cents"),
        ({"price_cents": 1.5}, "price_cents"),
        ({"currency": "eur"}, "currency"),
        ({"currency": "EURO"}, "currency"),
        ({"stock": -1}, "stock"),
        ({"stock": 1_000_001}, "stock"),
        ({"stock": "3"}, "stock"),
        ({"name": "Fine", "sku": "NEW-SKU"}, "sku"),
        ({"name": "nul\u0000char"}, "name"),
        ({"description": "nul\u0000char"}, "description"),
    ],
    ids=[
        "id",
        "version",
        "sku",
        "created_at",
        "updated_at",
        "unknown-colour",
        "null-name",
        "null-price",
        "null-currency",
        "null-stock",
        "name-empty",
        "name-201",
        "price-minus-1",
        "price-100000001",
        "price-string",
        "price-float",
        "currency-lowercase",
        "currency-4-letters",
        "stock-minus-1",
        "stock-1000001",
        "stock-string",
        "valid-field-with-a-forbidden-one",
        "name-with-nul-character",
        "description-with-nul-character",
    ],
)
async def test_an_invalid_patch_answers_422_and_changes_nothing(
    warm_client: httpx.AsyncClient,
    writer: dict[str, str],
    expect_problem: Any,
    body: dict[str, Any],
    field: str | None,
) -> None:
    product = await warm_product(warm_client, writer)

    response = await patch(warm_client, product, body, writer)

    problem = expect_problem(response, 422, "validation-error")
    if field is not None:
        assert any(field in error["loc"] for error in problem["errors"]), problem
    assert (await warm_client.get(f"/v1/products/{product['id']}")).json() == product


@pytest.mark.parametrize(
    "content",
    [b"[]", b'"name"', b"null", b"{", b"", b'{"name": "\xff"}'],
    ids=["array", "string", "null", "bad", "empty", "not-utf8"],
)
async def test_a_patch_that_is_not_a_json_object_answers_422(
    warm_client: httpx.AsyncClient,
    writer: dict[str, str],
    expect_problem: Any,
    content: bytes,
) -> None:
    product = await warm_product(warm_client, writer)
    etag = await current_etag(warm_client, product)

    response = await warm_client.patch(
        f"/v1/products/{product['id']}",
        content=content,
        headers={**writer, "Content-Type": MERGE_PATCH, "If-Match": etag},
    )

    expect_problem(response, 422, "validation-error")


async def test_patching_an_unknown_product_answers_404(
    client: httpx.AsyncClient, writer: dict[str, str], expect_problem: Any
) -> None:
    response = await client.patch(
        f"/v1/products/{uuid.uuid4()}",
        json={"name": "Cup"},
        headers={**writer, "If-Match": '"whatever"'},
    )

    expect_problem(response, 404, "not-found")


async def test_patching_a_deleted_product_answers_404(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], expect_problem: Any
) -> None:
    product = await new_product()
    etag = await current_etag(client, product)
    await client.delete(f"/v1/products/{product['id']}", headers=writer)

    response = await patch(client, product, {"name": "Cup"}, writer, if_match=etag)

    expect_problem(response, 404, "not-found")


async def test_patching_a_non_uuid_id_answers_404_or_422(
    client: httpx.AsyncClient, writer: dict[str, str]
) -> None:
    response = await client.patch(
        "/v1/products/not-a-uuid", json={"name": "Cup"}, headers={**writer, "If-Match": "*"}
    )

    assert response.status_code in (404, 422)


@pytest.mark.parametrize("scopes", [(), ("catalog:read",), ("catalog:reserve",)])
async def test_a_patch_without_catalog_write_answers_403(
    client: httpx.AsyncClient,
    new_product: Any,
    auth: Any,
    expect_problem: Any,
    scopes: tuple[str, ...],
) -> None:
    product = await new_product(name="Mug")

    response = await patch(client, product, {"name": "Cup"}, auth(*scopes))

    expect_problem(response, 403, "forbidden")
    assert (await client.get(f"/v1/products/{product['id']}")).json()["name"] == "Mug"


async def test_a_patch_without_a_token_answers_401(
    client: httpx.AsyncClient, new_product: Any, expect_problem: Any
) -> None:
    product = await new_product()

    response = await patch(client, product, {"name": "Cup"}, {})

    expect_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
