"""The Redis store: shared by replicas, and a Redis that fails or hangs degrades to no
cache (answers still 200, no added latency beyond the Redis timeout, a metric)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import pytest

from bazaar.gateway.cache.entry import Entry
from bazaar.gateway.cache.key import LISTS, target_of
from bazaar.gateway.cache.redisstore import ENTRY_FORMAT, RedisStore
from bazaar.gateway.ratelimit import connect_redis
from bazaar.shared.testing.infrastructure import Resolved
from bazaar.shared.testing.tokens import TokenIssuer

from .conftest import OTHER, PRODUCT, FakeCatalog, cache_status, read

HIT = re.compile(r"bazaar-gateway; hit; ttl=\d+")
TIMEOUT = 0.25  # GATEWAY_REDIS_TIMEOUT_SECONDS's default


async def test_replicas_share_entries_and_a_write_through_one_is_seen_by_the_other(
    gateways, catalog: FakeCatalog, redis_settings: dict[str, Any], token_issuer: TokenIssuer
) -> None:
    a, b = [await gateways.start({"catalog": catalog.url}, **redis_settings) for _ in "ab"]
    writer = {"Authorization": f"Bearer {token_issuer.issue('admin', ('catalog:write',))}"}

    stored, _ = await read(a, PRODUCT)
    shared, _ = await read(b, PRODUCT)
    catalog.version = 2
    assert (await a.delete(PRODUCT, headers=writer)).status == 200
    after, body = await read(b, PRODUCT)

    assert cache_status(stored) == "bazaar-gateway; fwd=miss; stored"
    assert HIT.fullmatch(cache_status(shared))
    assert cache_status(after) == "bazaar-gateway; fwd=miss; stored"
    assert b'"version": 2' in body
    assert catalog.reads() == 2


async def test_an_answer_fetched_before_an_invalidation_is_not_stored_after_it(
    redis_server: Resolved, cache_prefix: str
) -> None:
    client = connect_redis(redis_server.url, max_connections=4, pool_timeout=1.0)
    replicas = [
        RedisStore(client, prefix=cache_prefix, generation_seconds=60, timeout=1.0) for _ in "ab"
    ]
    try:
        target = target_of(PRODUCT, "")
        assert target is not None
        entry = Entry((("ETag", '"v1"'),), b"old", 30)
        ticket, found = await replicas[0].lookup(target)
        assert found is None
        await replicas[1].drop([LISTS, target.group])  # another replica's write meanwhile
        assert not await replicas[0].store(target, ticket, entry, 0.0)
        ticket, _ = await replicas[0].lookup(target)
        assert await replicas[0].store(target, ticket, entry, 0.5)
        _, found = await replicas[1].lookup(target)
        assert found is not None and found.entry == entry
        assert found.age == pytest.approx(0.5, abs=0.2)
        await replicas[1].drop(None)
        assert (await replicas[0].lookup(target))[1] is None
    finally:
        for store in replicas:
            await store.close()
        await client.aclose()


async def test_lookups_write_nothing_and_the_first_store_makes_the_generations(
    redis_server: Resolved, cache_prefix: str
) -> None:
    client = connect_redis(redis_server.url, max_connections=4, pool_timeout=1.0)
    store = RedisStore(client, prefix=cache_prefix, generation_seconds=60, timeout=1.0)
    try:
        made_up = [target_of(f"/v1/products/{uuid.uuid4()}", "") for _ in range(20)]
        lists = target_of("/v1/products", "q=mug")
        for target in [*made_up, lists]:
            assert target is not None
            assert (await store.lookup(target))[1] is None
        assert [key async for key in client.scan_iter(match=f"{cache_prefix}*")] == []

        assert lists is not None
        ticket, _ = await store.lookup(lists)
        assert await store.store(lists, ticket, Entry((), b"page", 30), 0.0)
        _, found = await store.lookup(lists)
        assert found is not None and found.entry.body == b"page"
        stale, _ = await store.lookup(lists)  # saw the generations: still stores
        assert await store.store(lists, stale, Entry((), b"again", 30), 0.0)
    finally:
        await store.close()
        await client.aclose()


async def test_an_entry_that_cannot_be_read_is_a_miss_and_the_cache_stays_on(
    gateways, catalog: FakeCatalog, redis_settings: dict[str, Any], cache_prefix: str, expect
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **redis_settings)
    for path in (PRODUCT, OTHER):
        await read(client, path)
    target = target_of(PRODUCT, "")
    assert target is not None
    redis = connect_redis(redis_settings["redis_url"], max_connections=1, pool_timeout=1.0)
    try:  # e.g. an entry of another gateway version's format, under this one's key
        pattern = f"{cache_prefix}v{ENTRY_FORMAT}:e:*:{target.key}"
        [name] = [key async for key in redis.scan_iter(match=pattern)]
        await redis.set(name, b"garbage from another version", keepttl=True)

        answers = [await read(client, path) for path in (PRODUCT, OTHER, PRODUCT)]
        assert await redis.exists(name)  # stored again, readable
    finally:
        await redis.aclose()

    assert cache_status(answers[0][0]) == "bazaar-gateway; fwd=miss; stored"
    assert HIT.fullmatch(cache_status(answers[1][0]))  # the cache is still on
    assert HIT.fullmatch(cache_status(answers[2][0]))
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_cache_store_failures_total") == 0
    assert metrics.value("gateway_cache_requests_total", result="error") == 0


async def test_a_refused_redis_means_no_cache_not_errors(
    gateways, catalog: FakeCatalog, closed_redis_url: str, expect
) -> None:
    catalog.delay = 0.2
    client = await gateways.start(
        {"catalog": catalog.url}, redis_url=closed_redis_url, rate_limiting=False
    )

    answers = await asyncio.gather(*(read(client, PRODUCT) for _ in range(10)))
    again, _ = await read(client, PRODUCT)

    assert {response.status for response, _ in answers} == {200}
    statuses = sorted(cache_status(response) for response, _ in answers)
    # Still one request upstream per key: single flight needs no Redis.
    assert statuses == ["bazaar-gateway; fwd=miss"] + ["bazaar-gateway; fwd=miss; collapsed"] * 9
    assert again.status == 200 and cache_status(again) == "bazaar-gateway; fwd=miss"
    assert catalog.reads() == 2
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_cache_requests_total", result="error") == 2
    assert metrics.value("gateway_cache_store_failures_total") >= 1


async def test_a_silent_redis_adds_no_more_than_its_timeout(
    gateways, catalog: FakeCatalog, silent_redis: str, expect
) -> None:
    client = await gateways.start(
        {"catalog": catalog.url}, redis_url=silent_redis, rate_limiting=False
    )

    took = []
    for _ in range(8):
        started = time.monotonic()
        response, _ = await read(client, PRODUCT)
        took.append(time.monotonic() - started)
        assert response.status == 200
        assert cache_status(response) == "bazaar-gateway; fwd=miss"

    assert max(took) < TIMEOUT + 0.2, took
    assert sorted(took)[-2] < 0.1, took  # only one request waits for Redis per second
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_cache_requests_total", result="error") == 8
    assert metrics.value("gateway_cache_store_failures_total") == 1


async def test_the_cache_comes_back_with_redis(
    gateways, catalog: FakeCatalog, redis_server: Resolved, cache_prefix: str, cuttable, caplog
) -> None:
    proxy, through = await cuttable(redis_server.url)
    client = await gateways.start(
        {"catalog": catalog.url},
        redis_url=through,
        cache_redis_prefix=cache_prefix,
        rate_limiting=False,
    )
    await read(client, PRODUCT)

    proxy.cut()
    during = [await read(client, PRODUCT) for _ in range(3)]
    proxy.mend()
    await asyncio.sleep(1.1)  # the cooldown: then one request tries Redis again
    back = [await read(client, PRODUCT) for _ in range(2)]

    assert [r.status for r, _ in during] == [200] * 3
    assert {cache_status(r) for r, _ in during} == {"bazaar-gateway; fwd=miss"}
    assert cache_status(back[0][0]) == "bazaar-gateway; fwd=miss; stored"
    assert HIT.fullmatch(cache_status(back[1][0]))
    warnings = [r for r in caplog.records if "response cache off: Redis failed" in r.getMessage()]
    assert len(warnings) == 1  # throttled: one line, however many requests
