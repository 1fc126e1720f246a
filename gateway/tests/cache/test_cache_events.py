"""Invalidation by catalog events on the real broker (this run's vhost): an event drops what
it names within 1 s on every replica; without a whole subscription hits are at most 1 s old."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aio_pika

from bazaar.shared.events import make_event
from bazaar.shared.messaging import EVENTS_EXCHANGE, encode_event

from .conftest import OTHER, PRODUCT, FakeCatalog, cache_status, read, subscribed

HIT = re.compile(r"bazaar-gateway; hit; ttl=\d+")
PRODUCT_ID = PRODUCT.rsplit("/", 1)[1]


async def publish(amqp_url: str, kind: str, data: dict[str, Any]) -> None:
    """Publish a catalog event as catalog's relay does."""
    event = make_event(source="/bazaar/catalog", type=kind, subject="s", data=data)
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        await exchange.publish(encode_event(event), routing_key=kind)


async def first_miss_after(client, path: str, *, within: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds until a read of `path` is no longer a hit (reads every 20 ms)."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            if not HIT.fullmatch(cache_status((await read(client, path))[0])):
                break
            await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_an_event_drops_its_products_and_every_list_within_a_second_on_every_replica(
    gateways, catalog: FakeCatalog, amqp_url: str, expect
) -> None:
    # Two replicas with their own in-process caches: each must see the event itself.
    replicas = [await gateways.start({"catalog": catalog.url}, amqp_url=amqp_url) for _ in "ab"]
    for client in replicas:
        await subscribed(client, expect)
        for path in (PRODUCT, OTHER, "/v1/products?in_stock=true"):
            await read(client, path)
        await asyncio.sleep(1.1)  # older than 1 s: only served while subscribed
        for path in (PRODUCT, OTHER, "/v1/products?in_stock=true"):
            response, _ = await read(client, path)
            assert HIT.fullmatch(cache_status(response)), path
            assert int(response.headers["Age"]) >= 1

    catalog.version = 2
    reserved = {"reservation_id": "r", "order_id": "o", "lines": [{"product_id": PRODUCT_ID}]}
    await publish(amqp_url, "catalog.stock.reserved", reserved)
    delays = await asyncio.gather(*(first_miss_after(c, PRODUCT) for c in replicas))

    assert max(delays) < 1.0, delays
    for client in replicas:
        fresh, body = await read(client, PRODUCT)
        assert HIT.fullmatch(cache_status(fresh)) and b'"version": 2' in body
        listed, _ = await read(client, "/v1/products?in_stock=true")
        assert cache_status(listed) == "bazaar-gateway; fwd=miss; stored"
        untouched, _ = await read(client, OTHER)
        assert HIT.fullmatch(cache_status(untouched))
        metrics = await expect.metrics(client)
        assert metrics.value("gateway_cache_invalidations_total", source="event") >= 1


async def test_a_shared_redis_cache_is_invalidated_by_events_too(
    gateways, catalog: FakeCatalog, redis_settings: dict[str, Any], amqp_url: str, expect
) -> None:
    client = await gateways.start({"catalog": catalog.url}, amqp_url=amqp_url, **redis_settings)
    await subscribed(client, expect)
    await read(client, PRODUCT)
    assert HIT.fullmatch(cache_status((await read(client, PRODUCT))[0]))

    await publish(amqp_url, "catalog.product.deleted", {"product_id": PRODUCT_ID, "sku": "S"})

    assert await first_miss_after(client, PRODUCT) < 1.0


async def test_without_a_broker_hits_are_at_most_a_second_old(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    await read(client, PRODUCT)
    young, _ = await read(client, PRODUCT)
    await asyncio.sleep(1.1)

    old, _ = await read(client, PRODUCT)

    assert HIT.fullmatch(cache_status(young))
    assert cache_status(old) == "bazaar-gateway; fwd=miss; stored"
    assert catalog.reads() == 2


async def test_a_lost_broker_connection_stops_hits_older_than_a_second_until_resubscribed(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any], amqp_url: str, cuttable, expect
) -> None:
    proxy, through = await cuttable(amqp_url)
    client = await gateways.start({"catalog": catalog.url}, amqp_url=through, **store_settings)
    await subscribed(client, expect)
    await read(client, PRODUCT)
    await asyncio.sleep(1.1)
    assert HIT.fullmatch(cache_status((await read(client, PRODUCT))[0]))

    proxy.cut()
    await subscribed(client, expect, to=False, within=2.0)
    refetched, _ = await read(client, PRODUCT)
    young, _ = await read(client, PRODUCT)
    await asyncio.sleep(1.1)
    old, _ = await read(client, PRODUCT)

    assert cache_status(refetched) == "bazaar-gateway; fwd=miss; stored"
    assert HIT.fullmatch(cache_status(young))
    assert cache_status(old) == "bazaar-gateway; fwd=miss; stored"

    proxy.mend()
    await subscribed(client, expect, within=15.0)
    # Fetched while events were missed: still held to 1 s once re-subscribed.
    await asyncio.sleep(1.1)
    assert cache_status((await read(client, PRODUCT))[0]) == "bazaar-gateway; fwd=miss; stored"
    await asyncio.sleep(1.1)
    assert HIT.fullmatch(cache_status((await read(client, PRODUCT))[0]))


async def test_a_broker_gone_silent_is_noticed_within_a_second_and_trusted_again_once_it_answers(
    gateways, catalog: FakeCatalog, amqp_url: str, cuttable, expect
) -> None:
    # No reset, no close: only the probes through the broker can tell (heartbeats: ~20 s).
    proxy, through = await cuttable(amqp_url)
    client = await gateways.start({"catalog": catalog.url}, amqp_url=through)
    await subscribed(client, expect)
    await read(client, PRODUCT)
    await asyncio.sleep(1.1)
    assert HIT.fullmatch(cache_status((await read(client, PRODUCT))[0]))

    proxy.freeze()
    frozen = time.monotonic()
    await subscribed(client, expect, to=False, within=3.0)
    noticed = time.monotonic() - frozen
    refetched, _ = await read(client, PRODUCT)
    proxy.thaw()
    thawed = time.monotonic()
    await subscribed(client, expect, within=2.0)
    flowing = time.monotonic() - thawed

    assert noticed < 1.5, noticed
    assert cache_status(refetched) == "bazaar-gateway; fwd=miss; stored"
    assert flowing < 0.5, flowing  # the same connection: no reconnection, no back-off
    await asyncio.sleep(1.1)  # events flow again: hits older than 1 s are served
    assert HIT.fullmatch(cache_status((await read(client, PRODUCT))[0]))
    await publish(amqp_url, "catalog.product.updated", {"id": PRODUCT_ID})
    assert await first_miss_after(client, PRODUCT) < 1.0
