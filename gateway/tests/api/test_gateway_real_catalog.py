"""The gateway in front of the real catalog service (uvicorn on a socket, its own database):
trace and request ids reach the service and come back in its own answers."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio

from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.cli import MIGRATIONS_DIR
from bazaar.catalog.config import CatalogSettings
from bazaar.shared import migrations
from bazaar.shared.testing.postgres import DatabaseFactory
from bazaar.shared.testing.server import serve_on_socket
from bazaar.shared.testing.tokens import JwksServer, TokenIssuer

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def catalog_url(
    database_factory: DatabaseFactory, jwks_server: JwksServer
) -> AsyncIterator[str]:
    """The real catalog on a socket, over a migrated database of its own."""
    url = await database_factory.create("gateway_catalog")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    settings = CatalogSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=url,
        jwt_jwks_url=jwks_server.url,
        jwt_issuer=TokenIssuer.ISSUER,
        jwt_audience=TokenIssuer.AUDIENCE,
    )
    async with serve_on_socket(create_catalog(settings)) as base:
        yield base


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(gateways, catalog_url: str):
    """A gateway whose catalog is the real one (auth and orders refuse connections)."""
    return await gateways.start({"catalog": catalog_url})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_real_catalogs_problem_carries_the_continued_trace_id(gateway, expect) -> None:
    response = await gateway.get(
        f"/v1/products/{uuid.uuid4()}",
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "X-Request-ID": "cat-404"},
    )
    body = await expect.problem(response, 404, "not-found")
    assert body["trace_id"] == TRACE_ID
    assert response.headers.getall("X-Trace-Id") == [TRACE_ID]
    assert response.headers.getall("X-Request-ID") == ["cat-404"]


async def test_the_real_catalogs_problem_carries_the_trace_the_gateway_started(
    gateway, expect
) -> None:
    response = await gateway.get(f"/v1/products/{uuid.uuid4()}")
    body = await expect.problem(response, 404, "not-found")
    assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"])
    assert body["trace_id"] == response.headers["X-Trace-Id"]


async def test_a_validation_error_of_the_real_catalog_comes_back_with_the_gateways_trace(
    gateway, token_issuer: TokenIssuer, expect
) -> None:
    token = token_issuer.issue("writer", ("catalog:write",))
    response = await gateway.post(
        "/v1/products",
        json={"sku": "bad sku with spaces", "name": "", "price_cents": -1},
        headers={**_bearer(token), "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    )
    body = await expect.problem(response, 422, "validation-error")
    assert body["trace_id"] == TRACE_ID
    assert body["errors"]


async def test_a_product_is_created_read_and_revalidated_through_the_gateway(
    gateway, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue("writer", ("catalog:write",))
    sku = f"GW-{uuid.uuid4().hex[:10]}"
    created = await gateway.post(
        "/v1/products",
        json={"sku": sku, "name": "Gateway lamp", "price_cents": 1999, "currency": "EUR"},
        headers=_bearer(token),
    )
    assert created.status == 201, await created.text()
    location = created.headers["Location"]
    assert location.startswith("/v1/products/")
    read = await gateway.get(location)
    assert read.status == 200
    assert (await read.json())["sku"] == sku
    etag = read.headers["ETag"]
    assert etag == created.headers["ETag"]
    revalidated = await gateway.get(location, headers={"If-None-Match": etag})
    assert revalidated.status == 304
    assert await revalidated.read() == b""
    assert revalidated.headers["ETag"] == etag


async def test_a_customer_cannot_create_a_product_through_the_gateway(
    gateway, token_issuer: TokenIssuer, expect
) -> None:
    token = token_issuer.issue("customer", ("catalog:read", "orders:read", "orders:write"))
    response = await gateway.post(
        "/v1/products",
        json={"sku": "NOPE-1", "name": "x", "price_cents": 1, "currency": "EUR"},
        headers=_bearer(token),
    )
    await expect.problem(response, 403, "forbidden")


async def test_readyz_reports_the_real_catalog_ready_and_the_missing_services_failing(
    gateway,
) -> None:
    response = await gateway.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["checks"] == {"auth": "failing", "catalog": "ok", "orders": "failing"}
