"""Product writes racing through the app: one winner per ETag, per key, per sku."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

VALID = {"sku": "MUG-1", "name": "Mug", "price_cents": 1290, "currency": "EUR", "stock": 5}


async def test_concurrent_patches_with_the_same_if_match_let_exactly_one_win(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], outbox_events: Any
) -> None:
    product = await new_product(name="Mug")
    url = f"/v1/products/{product['id']}"
    etag = (await client.get(url)).headers["ETag"]

    responses = await asyncio.gather(
        *(
            client.patch(url, json={"name": f"Name {i}"}, headers={**writer, "If-Match": etag})
            for i in range(10)
        )
    )

    assert Counter(r.status_code for r in responses) == {200: 1, 412: 9}
    (winner,) = (r for r in responses if r.status_code == 200)
    for loser in (r for r in responses if r.status_code == 412):
        assert loser.json()["type"].endswith("/precondition-failed")
    stored = (await client.get(url)).json()
    assert stored == winner.json()
    assert stored["version"] == product["version"] + 1
    assert len(await outbox_events("catalog.product.updated")) == 1


async def test_twenty_concurrent_posts_with_one_idempotency_key_create_one_product(
    client: httpx.AsyncClient, writer: dict[str, str], catalog_db: Any, outbox_events: Any
) -> None:
    headers = {**writer, "Idempotency-Key": "create-once"}

    responses = await asyncio.gather(
        *(client.post("/v1/products", json=VALID, headers=headers) for _ in range(20))
    )

    assert set(Counter(r.status_code for r in responses)) <= {201, 409}
    created = [r for r in responses if r.status_code == 201]
    assert created, [r.text for r in responses]
    assert len({r.json()["id"] for r in created}) == 1
    assert sum("Idempotent-Replayed" not in r.headers for r in created) == 1
    for busy in (r for r in responses if r.status_code == 409):
        assert busy.json()["type"].endswith("/idempotency-key-in-use")
    assert await catalog_db.fetchval("SELECT count(*) FROM product") == 1
    assert len(await outbox_events("catalog.product.created")) == 1


async def test_concurrent_posts_of_one_sku_under_different_keys_create_it_once(
    client: httpx.AsyncClient, writer: dict[str, str], catalog_db: Any
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/v1/products", json=VALID, headers={**writer, "Idempotency-Key": f"k{i}"})
            for i in range(10)
        )
    )

    assert Counter(r.status_code for r in responses) == {201: 1, 409: 9}
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["type"].endswith("/conflict")
    assert await catalog_db.fetchval("SELECT count(*) FROM product") == 1


async def test_concurrent_deletes_of_one_product_answer_one_204_and_the_rest_404(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str], outbox_events: Any
) -> None:
    product = await new_product()
    url = f"/v1/products/{product['id']}"

    responses = await asyncio.gather(*(client.delete(url, headers=writer) for _ in range(8)))

    assert Counter(r.status_code for r in responses) == {204: 1, 404: 7}
    assert len(await outbox_events("catalog.product.deleted")) == 1
