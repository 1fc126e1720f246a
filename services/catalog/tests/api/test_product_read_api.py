"""GET /v1/products/{id}: the representation, its strong ETag, and conditional GETs."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from bazaar.catalog.app import create_app
from bazaar.catalog.config import CatalogSettings
from bazaar.shared.testing.asgi import serve_in_process


async def test_a_product_is_public_and_answers_200_with_a_strong_etag_and_cache_control(
    client: httpx.AsyncClient, new_product: Any
) -> None:
    product = await new_product(sku="MUG-1", name="Mug")

    response = await client.get(f"/v1/products/{product['id']}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == product
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"'), "a strong ETag is not W/-prefixed"
    # Browsers revalidate; shared caches (the gateway) may keep it 30 s (API.md).
    assert response.headers["Cache-Control"] == "public, max-age=0, s-maxage=30"


async def test_the_etag_is_stable_while_the_product_is_unchanged(
    client: httpx.AsyncClient, new_product: Any
) -> None:
    product = await new_product()

    first = await client.get(f"/v1/products/{product['id']}")
    second = await client.get(f"/v1/products/{product['id']}")

    assert first.headers["ETag"] == second.headers["ETag"]


async def test_different_products_have_different_etags(
    client: httpx.AsyncClient, new_product: Any
) -> None:
    a, b = await new_product(), await new_product()

    etag_a = (await client.get(f"/v1/products/{a['id']}")).headers["ETag"]
    etag_b = (await client.get(f"/v1/products/{b['id']}")).headers["ETag"]

    assert etag_a != etag_b


async def test_a_matching_if_none_match_answers_304_with_no_body(
    client: httpx.AsyncClient, new_product: Any
) -> None:
    product = await new_product()
    url = f"/v1/products/{product['id']}"
    etag = (await client.get(url)).headers["ETag"]

    response = await client.get(url, headers={"If-None-Match": etag})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == etag
    assert response.headers["Cache-Control"] == "public, max-age=0, s-maxage=30"


@pytest.mark.parametrize(
    "header",
    ['"stale", {etag}', "W/{etag}", "*", '{etag}, "other"'],
    ids=["in-a-list", "weak-form", "star", "first-of-list"],
)
async def test_if_none_match_uses_the_weak_comparison_and_lists(
    client: httpx.AsyncClient, new_product: Any, header: str
) -> None:
    product = await new_product()
    url = f"/v1/products/{product['id']}"
    etag = (await client.get(url)).headers["ETag"]

    response = await client.get(url, headers={"If-None-Match": header.format(etag=etag)})

    assert response.status_code == 304
    assert response.content == b""


async def test_a_stale_if_none_match_answers_200_with_the_new_representation(
    client: httpx.AsyncClient, new_product: Any, writer: dict[str, str]
) -> None:
    product = await new_product(name="Before")
    url = f"/v1/products/{product['id']}"
    old_etag = (await client.get(url)).headers["ETag"]
    await client.patch(url, json={"name": "After"}, headers={**writer, "If-Match": old_etag})

    response = await client.get(url, headers={"If-None-Match": old_etag})

    assert response.status_code == 200
    assert response.json()["name"] == "After"
    assert response.headers["ETag"] != old_etag


async def test_an_unparsable_if_none_match_is_ignored(
    client: httpx.AsyncClient, new_product: Any
) -> None:
    product = await new_product()

    response = await client.get(
        f"/v1/products/{product['id']}", headers={"If-None-Match": "garbage"}
    )

    assert response.status_code == 200


async def test_an_unknown_product_answers_404_not_found(
    client: httpx.AsyncClient, expect_problem: Any
) -> None:
    response = await client.get(f"/v1/products/{uuid.uuid4()}")

    expect_problem(response, 404, "not-found")


async def test_an_unknown_product_answers_404_even_with_if_none_match_star(
    client: httpx.AsyncClient, expect_problem: Any
) -> None:
    response = await client.get(f"/v1/products/{uuid.uuid4()}", headers={"If-None-Match": "*"})

    expect_problem(response, 404, "not-found")


@pytest.mark.parametrize(
    "product_id",
    ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%00", "' OR 1=1 --", "x" * 300],
)
async def test_an_id_that_is_not_a_uuid_answers_404_or_422_never_500(
    warm_client: httpx.AsyncClient, expect_problem: Any, product_id: str
) -> None:
    response = await warm_client.get(f"/v1/products/{product_id}")

    assert response.status_code in (404, 422), response.text
    slug = "not-found" if response.status_code == 404 else "validation-error"
    expect_problem(response, response.status_code, slug)


async def test_a_bearer_token_is_not_needed_to_read(
    client: httpx.AsyncClient, new_product: Any, auth: Any
) -> None:
    product = await new_product()

    anonymous = await client.get(f"/v1/products/{product['id']}")
    customer = await client.get(f"/v1/products/{product['id']}", headers=auth("catalog:read"))

    assert anonymous.status_code == customer.status_code == 200


async def test_the_shared_cache_lifetime_is_a_setting(
    catalog_settings: CatalogSettings, new_product: Any
) -> None:
    product = await new_product()
    settings = catalog_settings.model_copy(update={"cache_s_maxage": 5})

    async with serve_in_process(create_app(settings), base_url="http://catalog.test") as other:
        read = await other.get(f"/v1/products/{product['id']}")
        listed = await other.get("/v1/products")

    assert read.headers["Cache-Control"] == "public, max-age=0, s-maxage=5"
    assert listed.headers["Cache-Control"] == "public, max-age=0, s-maxage=5"
