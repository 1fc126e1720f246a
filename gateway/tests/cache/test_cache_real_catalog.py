"""The cache in front of the real catalog (uvicorn on a socket, its own database, its outbox
relay on this run's broker) with Redis: API.md's promises end to end. A write through the
gateway is seen by the very next read; a change made behind the gateway's back (straight to
catalog, as orders' reservations are) is seen within 1 s through catalog's own event."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from pydantic import SecretStr

from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.cli import MIGRATIONS_DIR
from bazaar.catalog.config import CatalogSettings
from bazaar.shared import migrations
from bazaar.shared.testing.amqp import tap_events
from bazaar.shared.testing.postgres import DatabaseFactory
from bazaar.shared.testing.server import serve_on_socket
from bazaar.shared.testing.tokens import JwksServer, TokenIssuer

from .conftest import cache_status, read, subscribed

HIT = re.compile(r"bazaar-gateway; hit; ttl=\d+")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def catalog_url(
    database_factory: DatabaseFactory, jwks_server: JwksServer, amqp_url: str
) -> AsyncIterator[str]:
    """The real catalog on a socket, publishing its events to this run's broker."""
    url = await database_factory.create("gateway_cache_catalog")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    settings = CatalogSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=url,
        amqp_url=SecretStr(amqp_url),
        jwt_jwks_url=jwks_server.url,
        jwt_issuer=TokenIssuer.ISSUER,
        jwt_audience=TokenIssuer.AUDIENCE,
    )
    async with serve_on_socket(create_catalog(settings)) as base:
        yield base


def _writer(token_issuer: TokenIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_issuer.issue('admin', ('catalog:write',))}"}


async def _created(client: Any, writer: dict[str, str], stock: int = 5) -> dict[str, Any]:
    """Create a product (through the gateway's aiohttp client or catalog's own, httpx)."""
    token = uuid.uuid4().hex[:10]
    body = {
        "sku": f"CACHE-{token}",
        "name": f"Lamp {token}",
        "price_cents": 1999,
        "currency": "EUR",
    }
    created = await client.post("/v1/products", json={**body, "stock": stock}, headers=writer)
    if isinstance(created, httpx.Response):
        assert created.status_code == 201, created.text
        made: dict[str, Any] = created.json()
        return made
    assert created.status == 201, await created.text()
    product: dict[str, Any] = await created.json()
    return product


async def test_a_write_through_the_gateway_is_seen_by_the_very_next_read(
    gateways, catalog_url: str, redis_settings: dict[str, Any], token_issuer: TokenIssuer
) -> None:
    gateway = await gateways.start({"catalog": catalog_url}, **redis_settings)
    writer = _writer(token_issuer)
    product = await _created(gateway, writer)
    path = f"/v1/products/{product['id']}"
    listing = f"/v1/products?q={product['name'][5:]}"
    for target in (path, listing):
        await read(gateway, target)
        assert HIT.fullmatch(cache_status((await read(gateway, target))[0])), target
    etag = (await read(gateway, path))[0].headers["ETag"]
    not_modified, _ = await read(gateway, path, headers={"If-None-Match": etag})
    assert not_modified.status == 304 and HIT.fullmatch(cache_status(not_modified))

    for price in range(2000, 2010):  # each write, then at once the read
        current = (await read(gateway, path))[0].headers["ETag"]
        patched = await gateway.patch(
            path,
            json={"price_cents": price},
            headers={**writer, "If-Match": current, "Content-Type": "application/merge-patch+json"},
        )
        assert patched.status == 200, await patched.text()
        response, _ = await read(gateway, path)
        assert (await response.json())["price_cents"] == price
        listed = await (await gateway.get(listing)).json()
        assert [p["price_cents"] for p in listed["items"]] == [price]

    deleted = await gateway.delete(path, headers=writer)
    assert deleted.status == 204
    gone, _ = await read(gateway, path)
    assert gone.status == 404
    assert (await (await gateway.get(listing)).json())["items"] == []


async def test_a_change_behind_the_gateways_back_is_seen_within_a_second(
    gateways,
    catalog_url: str,
    redis_settings: dict[str, Any],
    amqp_url: str,
    token_issuer: TokenIssuer,
    expect,
) -> None:
    writer = _writer(token_issuer)
    async with httpx.AsyncClient(base_url=catalog_url) as direct:  # not through the gateway
        async with tap_events(amqp_url, "catalog.product.created") as created:
            product = await _created(direct, writer)
            async with asyncio.timeout(10):  # its event is out before the gateway listens
                while product["id"] not in [e["subject"] for e in created.events]:
                    await created.wait_for(len(created.events) + 1)
        gateway = await gateways.start(
            {"catalog": catalog_url}, amqp_url=amqp_url, **redis_settings
        )
        await subscribed(gateway, expect)
        path = f"/v1/products/{product['id']}"
        await read(gateway, path)
        await asyncio.sleep(1.1)  # older than 1 s: served only because events are received
        cached, _ = await read(gateway, path)
        assert HIT.fullmatch(cache_status(cached))

        changed = await direct.patch(
            path,
            json={"stock": 1},
            headers={
                **writer,
                "If-Match": cached.headers["ETag"],
                "Content-Type": "application/merge-patch+json",
            },
        )
        assert changed.status_code == 200, changed.text
    started = time.monotonic()
    async with asyncio.timeout(5):
        while True:
            response, _ = await read(gateway, path)
            if (await response.json())["stock"] == 1:
                break
            await asyncio.sleep(0.02)

    assert time.monotonic() - started < 1.0
