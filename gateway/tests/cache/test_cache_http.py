"""The response cache through the gateway, in front of a fake catalog, with each store:
Cache-Status as API.md spells it, single flight, what is (not) stored, 304s and writes."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

from yarl import URL

from bazaar.shared.testing.tokens import TokenIssuer

from .conftest import OTHER, PRODUCT, SHARED, FakeCatalog, cache_status, read

PRODUCT_UPPER = "/v1/products/" + PRODUCT.rsplit("/", 1)[1].upper()
HIT = re.compile(r"bazaar-gateway; hit; ttl=(\d+)")


async def test_a_miss_is_stored_and_the_next_read_is_a_hit_with_its_age_and_ttl(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)

    first, first_body = await read(client, PRODUCT)
    second, second_body = await read(client, PRODUCT)

    assert first.status == second.status == 200
    assert cache_status(first) == "bazaar-gateway; fwd=miss; stored"
    assert "Age" not in first.headers
    hit = HIT.fullmatch(cache_status(second))
    assert hit is not None and 28 <= int(hit[1]) <= 30
    assert second.headers["Age"] == "0"
    assert second_body == first_body
    assert second.headers["ETag"] == first.headers["ETag"] == '"v1"'
    assert second.headers["Cache-Control"] == "public, max-age=0, s-maxage=30"
    assert second.headers["Content-Type"] == "application/json"
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    assert second.headers["X-Trace-Id"] != first.headers["X-Trace-Id"]
    assert catalog.reads() == 1


async def test_lists_are_cached_by_path_and_normalised_query(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)

    first, _ = await read(client, "/v1/products?q=mug&limit=5")
    same, _ = await read(client, "/v1/products?limit=5&q=mug")
    other, _ = await read(client, "/v1/products?q=cup&limit=5")

    assert cache_status(first) == "bazaar-gateway; fwd=miss; stored"
    assert HIT.fullmatch(cache_status(same))
    assert cache_status(other) == "bazaar-gateway; fwd=miss; stored"
    assert catalog.reads() == 2


async def test_fifty_concurrent_misses_send_one_request_upstream(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    catalog.delay = 0.3
    client = await gateways.start({"catalog": catalog.url}, **store_settings)

    answers = await asyncio.gather(*(read(client, PRODUCT) for _ in range(50)))

    assert catalog.reads() == 1
    assert {response.status for response, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1
    statuses = sorted(cache_status(response) for response, _ in answers)
    assert statuses == ["bazaar-gateway; fwd=miss; collapsed"] * 49 + [
        "bazaar-gateway; fwd=miss; stored"
    ]
    collapsed = [r for r, _ in answers if cache_status(r).endswith("collapsed")]
    assert all(r.headers["Age"] == "0" for r in collapsed)


async def test_a_clients_no_cache_goes_upstream_and_says_fwd_request(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    await read(client, PRODUCT)

    fresh, _ = await read(client, PRODUCT, headers={"Cache-Control": "no-cache"})
    reload, _ = await read(client, PRODUCT, headers={"Cache-Control": "max-age=0"})

    assert cache_status(fresh) == cache_status(reload) == "bazaar-gateway; fwd=request"
    assert catalog.reads() == 3


async def test_if_none_match_answers_304_on_a_hit_and_on_a_miss(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    condition = {"If-None-Match": '"v1"'}

    miss, miss_body = await read(client, PRODUCT, headers=condition)
    hit, hit_body = await read(client, PRODUCT, headers=condition)
    changed, changed_body = await read(client, PRODUCT, headers={"If-None-Match": '"v0"'})

    assert (miss.status, miss_body) == (304, b"")
    assert cache_status(miss) == "bazaar-gateway; fwd=miss; stored"
    assert (hit.status, hit_body) == (304, b"")
    assert HIT.fullmatch(cache_status(hit))
    for answer in (miss, hit):
        assert answer.headers["ETag"] == '"v1"'
        assert answer.headers["Cache-Control"] == "public, max-age=0, s-maxage=30"
        assert "Content-Type" not in answer.headers
    assert changed.status == 200 and b'"version": 1' in changed_body
    assert HIT.fullmatch(cache_status(changed))
    # The one fetch asked for the whole representation, whatever the client's condition.
    assert catalog.reads() == 1
    assert "If-None-Match" not in catalog.seen[0][2]


async def test_a_token_does_not_prevent_a_hit(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any], token_issuer: TokenIssuer
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    bearer = {"Authorization": f"Bearer {token_issuer.issue('ada', ('catalog:read',))}"}

    first, _ = await read(client, PRODUCT, headers=bearer)
    anonymous, _ = await read(client, PRODUCT)
    again, _ = await read(client, PRODUCT, headers=bearer)

    assert cache_status(first) == "bazaar-gateway; fwd=miss; stored"
    assert HIT.fullmatch(cache_status(anonymous)) and HIT.fullmatch(cache_status(again))
    assert catalog.reads() == 1


async def test_head_is_answered_from_a_stored_get(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    _, body = await read(client, PRODUCT)

    head = await client.head(PRODUCT)

    assert head.status == 200 and await head.read() == b""
    assert HIT.fullmatch(cache_status(head))
    assert head.headers["Content-Length"] == str(len(body))
    assert catalog.reads() == 1


async def test_a_head_miss_is_fetched_with_get_stored_and_collapses_with_gets(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    catalog.delay = 0.2
    client = await gateways.start({"catalog": catalog.url}, **store_settings)

    heads = [client.head(PRODUCT) for _ in range(5)]
    gets = [read(client, PRODUCT) for _ in range(5)]
    *headed, got = await asyncio.gather(*heads, asyncio.gather(*gets))
    later = await client.head(PRODUCT)
    conditional = await client.head(OTHER, headers={"If-None-Match": '"v1"'})

    assert [m for m, _, _ in catalog.seen] == ["GET", "GET"]  # catalog answers HEAD 405
    _, body = got[0]
    statuses = [cache_status(r) for r in headed] + [cache_status(r) for r, _ in got]
    assert sorted(statuses) == ["bazaar-gateway; fwd=miss; collapsed"] * 9 + [
        "bazaar-gateway; fwd=miss; stored"
    ]
    for head in (*headed, later):
        assert head.status == 200 and await head.read() == b""
        assert head.headers["Content-Length"] == str(len(body))
        assert head.headers["Content-Type"] == "application/json"
        assert head.headers["ETag"] == '"v1"'
    assert HIT.fullmatch(cache_status(later))
    assert conditional.status == 304
    assert cache_status(conditional) == "bazaar-gateway; fwd=miss; stored"


async def test_a_head_of_an_answer_too_large_to_keep_is_its_gets_head_without_the_body(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    catalog.padding = 100_000  # over the relay's buffer: a GET's body is streamed
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    paths = ("/v1/products", "/v1/products?utm=x")
    bodies = [(await read(client, path))[1] for path in paths]

    heads = [await client.head(path) for path in paths]
    after, after_body = await read(client, paths[0])  # the connection is still sound

    for head, body in zip(heads, bodies, strict=True):
        assert head.status == 200 and await head.read() == b""
        assert head.headers["Content-Length"] == str(len(body))
    assert [cache_status(h) for h in heads] == [
        "bazaar-gateway; fwd=miss",
        "bazaar-gateway; fwd=bypass",
    ]
    assert after.status == 200 and after_body == bodies[0]
    assert {m for m, _, _ in catalog.seen} == {"GET"}


async def test_a_leader_whose_client_stops_reading_holds_no_one_else_back(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    catalog.padding = 8_000_000  # streamed, never stored: nothing for the waiters to share
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    assert client.server.host is not None and client.server.port is not None
    loop = asyncio.get_running_loop()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    try:
        await loop.sock_connect(stalled, (client.server.host, client.server.port))
        await loop.sock_sendall(stalled, b"GET /v1/products?limit=100 HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):  # the leader's fetch is under way; it is never read
            await catalog.reached.wait()

        started = time.monotonic()
        async with asyncio.timeout(5):
            after, body = await read(client, "/v1/products?limit=100")
        took = time.monotonic() - started
    finally:
        stalled.close()

    assert after.status == 200 and len(body) > 8_000_000
    assert cache_status(after) == "bazaar-gateway; fwd=miss"
    assert took < 2.0, took
    assert catalog.reads() == 2


async def test_answers_other_than_a_shared_200_are_not_stored(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    cases: list[dict[str, Any]] = [
        {"status": 404, "content_type": "application/problem+json"},
        {"status": 203},
        {"cache_control": "private, s-maxage=30"},
        {"cache_control": "no-store"},
        {"cache_control": None},
    ]
    for case in cases:
        catalog.status, catalog.content_type, catalog.cache_control = (
            200,
            "application/json",
            SHARED,
        )
        for name, value in case.items():
            setattr(catalog, name, value)
        before = catalog.reads()
        first, _ = await read(client, PRODUCT)
        second, _ = await read(client, PRODUCT)
        assert first.status == second.status == case.get("status", 200), case
        assert cache_status(first) == cache_status(second) == "bazaar-gateway; fwd=miss", case
        assert catalog.reads() == before + 2, case


async def test_an_answer_over_the_entry_size_is_not_stored(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    catalog.padding = 3000
    client = await gateways.start(
        {"catalog": catalog.url}, cache_max_entry_bytes=2048, **store_settings
    )

    first, body = await read(client, PRODUCT)
    second, _ = await read(client, PRODUCT)

    assert first.status == 200 and len(body) > 2048
    assert cache_status(first) == cache_status(second) == "bazaar-gateway; fwd=miss"
    assert catalog.reads() == 2


async def test_a_write_through_the_gateway_is_seen_by_the_very_next_read(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any], token_issuer: TokenIssuer
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    writer = {"Authorization": f"Bearer {token_issuer.issue('admin', ('catalog:write',))}"}
    for path in (PRODUCT, OTHER, "/v1/products", "/v1/products?q=mug"):
        await read(client, path)
        assert HIT.fullmatch(cache_status((await read(client, path))[0])), path

    catalog.version = 2  # the write below changes the product (and so the lists)
    # The id spelt otherwise: catalog reads the same product, so its entries go too.
    patched = await client.patch(PRODUCT_UPPER, json={"name": "x"}, headers=writer)
    assert patched.status == 200
    after = {path: await read(client, path) for path in (PRODUCT, "/v1/products?q=mug", OTHER)}

    assert cache_status(after[PRODUCT][0]) == "bazaar-gateway; fwd=miss; stored"
    assert b'"version": 2' in after[PRODUCT][1]
    assert cache_status(after["/v1/products?q=mug"][0]) == "bazaar-gateway; fwd=miss; stored"
    assert HIT.fullmatch(cache_status(after[OTHER][0]))  # another product: untouched

    created = await client.post("/v1/products", json={}, headers=writer)
    assert created.status == 200
    listed, _ = await read(client, "/v1/products")
    assert cache_status(listed) == "bazaar-gateway; fwd=miss; stored"


async def test_a_write_to_a_percent_encoded_product_path_is_seen_by_the_next_read(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any], token_issuer: TokenIssuer
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    writer = {"Authorization": f"Bearer {token_issuer.issue('admin', ('catalog:write',))}"}
    base = str(client.make_url("")).rstrip("/")
    encoded_product = PRODUCT.replace("-", "%2D", 1)  # catalog decodes it: the same product
    for method, path in (("PATCH", encoded_product), ("POST", "/v1/product%73")):
        for cached in (PRODUCT, "/v1/products"):
            await read(client, cached)
            assert HIT.fullmatch(cache_status((await read(client, cached))[0])), cached
        catalog.version += 1

        written = await client.session.request(
            method, URL(base + path, encoded=True), json={}, headers=writer
        )

        assert written.status == 200 and catalog.seen[-1][0] == method
        listed, _ = await read(client, "/v1/products")
        assert cache_status(listed) == "bazaar-gateway; fwd=miss; stored", path
        product, body = await read(client, PRODUCT)
        if method == "PATCH":
            assert cache_status(product) == "bazaar-gateway; fwd=miss; stored"
            assert f'"version": {catalog.version}'.encode() in body


async def test_a_product_id_in_another_spelling_is_passed_through(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)

    answers = [await read(client, PRODUCT_UPPER) for _ in range(2)]

    assert [cache_status(r) for r, _ in answers] == ["bazaar-gateway; fwd=bypass"] * 2
    assert catalog.reads() == 2


async def test_a_read_with_a_parameter_catalog_does_not_read_is_passed_through(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    paths = ["/v1/products?utm=a", "/v1/products?q=mug&utm=b", f"{PRODUCT}?x=1"]

    answers = [await read(client, path) for path in paths * 2]

    assert [cache_status(r) for r, _ in answers] == ["bazaar-gateway; fwd=bypass"] * 6
    assert catalog.reads() == 6


async def test_the_cache_metrics_count_each_result(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any], expect
) -> None:
    catalog.delay = 0.2
    client = await gateways.start({"catalog": catalog.url}, **store_settings)
    await asyncio.gather(*(read(client, PRODUCT) for _ in range(3)))
    await read(client, PRODUCT)
    await read(client, PRODUCT, headers={"Cache-Control": "no-cache"})

    metrics = await expect.metrics(client)

    def count(result: str) -> float:
        return metrics.value("gateway_cache_requests_total", result=result)

    assert (count("miss"), count("collapsed"), count("hit"), count("bypass")) == (1, 2, 1, 1)
    assert count("error") == 0
    assert metrics.value("gateway_cache_stored_bytes_total") > 0


async def test_requests_that_waited_for_a_failed_fetch_share_its_problem(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any], expect
) -> None:
    catalog.delay, catalog.status, catalog.cache_control = 0.3, 503, None
    client = await gateways.start({"catalog": catalog.url}, **store_settings)

    answers = await asyncio.gather(*(client.get(PRODUCT) for _ in range(5)))

    assert catalog.reads() == 1
    bodies = [await expect.problem(response, 503, "upstream-unavailable") for response in answers]
    statuses = sorted(cache_status(response) for response in answers)
    assert statuses == ["bazaar-gateway; fwd=miss"] + ["bazaar-gateway; fwd=miss; collapsed"] * 4
    # Each answer is its own: its request id and trace, not the fetch's.
    assert len({response.headers["X-Request-ID"] for response in answers}) == 5
    assert len({body["trace_id"] for body in bodies}) == 5


async def test_with_cors_configured_answers_are_still_cached_and_each_gets_its_own_cors(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    # The gateway's own `Vary: Origin` (CORS) is not the upstream's: the cache adds the
    # CORS headers to each answer itself, so it does not keep an answer per origin.
    catalog.delay = 0.2
    shop = "https://shop.example"
    client = await gateways.start({"catalog": catalog.url}, cors_origins=(shop,), **store_settings)

    burst = await asyncio.gather(*(read(client, PRODUCT) for _ in range(5)))
    cross, _ = await read(client, PRODUCT, headers={"Origin": shop})
    plain, _ = await read(client, PRODUCT)

    assert sorted(cache_status(r) for r, _ in burst) == [
        "bazaar-gateway; fwd=miss; collapsed"
    ] * 4 + ["bazaar-gateway; fwd=miss; stored"]
    assert HIT.fullmatch(cache_status(cross)) and HIT.fullmatch(cache_status(plain))
    assert catalog.reads() == 1
    assert cross.headers["Access-Control-Allow-Origin"] == shop
    assert "Access-Control-Allow-Origin" not in plain.headers
    for response in (cross, plain, *(r for r, _ in burst)):
        assert response.headers.getall("Vary") == ["Origin"]


async def test_an_upstreams_own_vary_is_still_not_stored_with_cors_configured(
    gateways, catalog: FakeCatalog, store_settings: dict[str, Any]
) -> None:
    catalog.extra_headers = {"Vary": "Origin"}
    client = await gateways.start(
        {"catalog": catalog.url}, cors_origins=("https://shop.example",), **store_settings
    )

    first, _ = await read(client, PRODUCT)
    second, _ = await read(client, PRODUCT)

    assert cache_status(first) == cache_status(second) == "bazaar-gateway; fwd=miss"
    assert catalog.reads() == 2
