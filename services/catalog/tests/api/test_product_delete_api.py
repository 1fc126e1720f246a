"""DELETE /v1/products/{id}: gone for readers, idempotent in effect, and announced."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest


async def test_a_deleted_product_answers_204_then_404_on_read(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], expect_problem: Any
) -> None:
    product = await new_product()

    response = await client.delete(f"/v1/products/{product['id']}", headers=writer)

    assert response.status_code == 204
    assert response.content == b""
    expect_problem(await client.get(f"/v1/products/{product['id']}"), 404, "not-found")


async def test_deleting_again_answers_404(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], expect_problem: Any
) -> None:
    product = await new_product()
    await client.delete(f"/v1/products/{product['id']}", headers=writer)

    response = await client.delete(f"/v1/products/{product['id']}", headers=writer)

    expect_problem(response, 404, "not-found")


async def test_deleting_an_unknown_product_answers_404(
    client: httpx.AsyncClient, writer: dict[str, str], expect_problem: Any
) -> None:
    response = await client.delete(f"/v1/products/{uuid.uuid4()}", headers=writer)

    expect_problem(response, 404, "not-found")


async def test_a_current_if_match_is_honoured(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str]
) -> None:
    product = await new_product()
    etag = (await client.get(f"/v1/products/{product['id']}")).headers["ETag"]

    response = await client.delete(
        f"/v1/products/{product['id']}", headers={**writer, "If-Match": etag}
    )

    assert response.status_code == 204


async def test_a_stale_if_match_answers_412_and_keeps_the_product(
    client: httpx.AsyncClient,
    new_product: Any,
    writer: dict[str, str],
    expect_problem: Any,
    outbox_events: Any,
) -> None:
    product = await new_product(name="Mug")
    url = f"/v1/products/{product['id']}"
    stale = (await client.get(url)).headers["ETag"]
    await client.patch(url, json={"name": "Cup"}, headers={**writer, "If-Match": stale})

    response = await client.delete(url, headers={**writer, "If-Match": stale})

    expect_problem(response, 412, "precondition-failed")
    assert (await client.get(url)).status_code == 200
    assert await outbox_events("catalog.product.deleted") == []


async def test_deleting_writes_a_catalog_product_deleted_event(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], outbox_events: Any
) -> None:
    product = await new_product(sku="MUG-1")

    await client.delete(f"/v1/products/{product['id']}", headers=writer)

    events = await outbox_events("catalog.product.deleted")
    assert len(events) == 1
    event = events[0]
    assert event["type"] == event["_row_type"] == "catalog.product.deleted"
    assert event["subject"] == event["_row_subject"] == product["id"]
    assert event["data"] == {"product_id": product["id"], "sku": "MUG-1"}


async def test_the_sku_of_a_deleted_product_can_be_used_again(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str]
) -> None:
    old = await new_product(sku="MUG-1")
    await client.delete(f"/v1/products/{old['id']}", headers=writer)

    response = await client.post(
        "/v1/products",
        json={"sku": "MUG-1", "name": "New mug", "price_cents": 5, "currency": "EUR"},
        headers=writer,
    )

    assert response.status_code == 201, response.text
    assert response.json()["id"] != old["id"]
    assert (await client.get(f"/v1/products/{response.json()['id']}")).status_code == 200


@pytest.mark.parametrize("scopes", [(), ("catalog:read",), ("catalog:reserve",)])
async def test_deleting_without_catalog_write_answers_403_and_keeps_the_product(
    client: httpx.AsyncClient,
    new_product: Any,
    auth: Any,
    expect_problem: Any,
    scopes: tuple[str, ...],
) -> None:
    product = await new_product()

    response = await client.delete(f"/v1/products/{product['id']}", headers=auth(*scopes))

    expect_problem(response, 403, "forbidden")
    assert (await client.get(f"/v1/products/{product['id']}")).status_code == 200


async def test_deleting_without_a_token_answers_401(
    client: httpx.AsyncClient, new_product: Any, expect_problem: Any
) -> None:
    product = await new_product()

    response = await client.delete(f"/v1/products/{product['id']}")

    expect_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get(f"/v1/products/{product['id']}")).status_code == 200


async def test_deleting_a_non_uuid_id_answers_404_or_422(
    client: httpx.AsyncClient, writer: dict[str, str]
) -> None:
    response = await client.delete("/v1/products/not-a-uuid", headers=writer)

    assert response.status_code in (404, 422)
