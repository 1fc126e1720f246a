"""The cache's rules without a network: keys, directives, entries, the in-process store,
what an event names, and when a stored answer may be served."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.config import CatalogSettings
from bazaar.gateway.cache.directive import asks_fresh_fetch, shared_lifetime
from bazaar.gateway.cache.entry import Entry, entry_of, shared_for
from bazaar.gateway.cache.events import products_named
from bazaar.gateway.cache.key import LIST_PARAMETERS, LISTS, target_of, written_groups
from bazaar.gateway.cache.memory import MAX_FETCH_SECONDS, MemoryStore
from bazaar.gateway.cache.store import Found
from bazaar.gateway.cache.trust import Trust

ID = "0f5ee755-e405-459d-8bef-d25b9c13ddad"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_key_ignores_the_order_of_parameters_but_not_of_one_names_values() -> None:
    a = target_of("/v1/products", "q=mug&limit=5&in_stock=true")
    b = target_of("/v1/products", "in_stock=true&limit=5&q=mug")
    assert a is not None and b is not None and a == b and a.group == LISTS
    assert target_of("/v1/products", "q=a&q=b") != target_of("/v1/products", "q=b&q=a")
    assert target_of("/v1/products", "q=a+b") == target_of("/v1/products", "q=a%20b")
    assert target_of("/v1/products", "") != target_of("/v1/products", "q=")


def test_only_the_list_parameters_catalog_reads_are_cached_and_no_product_query() -> None:
    everything = "limit=5&cursor=abc&q=mug&min_price_cents=1&max_price_cents=9&in_stock=true"
    assert target_of("/v1/products", everything) is not None
    for query in ("utm=1", "q=mug&utm=1", "Limit=5", "q=mug&&x"):
        assert target_of("/v1/products", query) is None, query
    for query in ("x=1", "limit=5", "="):
        assert target_of(f"/v1/products/{ID}", query) is None, query


def test_the_list_parameters_are_those_of_catalogs_list_route() -> None:
    settings = CatalogSettings(_env_file=None, database_url="postgresql://u:p@127.0.0.1:1/x")  # type: ignore[call-arg]
    operation = create_catalog(settings).openapi()["paths"]["/v1/products"]["get"]
    read = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert read == LIST_PARAMETERS


def test_only_the_canonical_spelling_of_a_product_id_is_cached() -> None:
    target = target_of(f"/v1/products/{ID}", "")
    assert target is not None and target.group == ID
    for odd in (ID.upper(), ID.replace("-", ""), f"{{{ID}}}", f"{ID}/x", "not-an-id"):
        assert target_of(f"/v1/products/{odd}", "") is None, odd


def test_a_write_names_every_list_and_its_product_however_spelt() -> None:
    assert written_groups("/v1/products") == [LISTS]
    assert written_groups(f"/v1/products/{ID.upper()}") == [LISTS, ID]
    assert written_groups(f"/v1/products/{ID}/anything") == [LISTS, ID]
    assert written_groups("/v1/products/nonsense") == [LISTS]


@pytest.mark.parametrize(
    ("values", "authorized", "lifetime"),
    [
        (["public, max-age=0, s-maxage=30"], False, 30),
        (["public, max-age=0, s-maxage=30"], True, 30),
        (["max-age=60"], False, 60),
        (["max-age=60"], True, None),  # RFC 9111 §3.5: not shared with Authorization
        (["public", "s-maxage=5"], False, 5),
        (['S-MAXAGE="7"'], False, 7),
        (["public, s-maxage=30, private"], False, None),
        (["no-store, s-maxage=30"], False, None),
        (["no-cache, s-maxage=30"], False, None),
        (["public, max-age=0"], False, None),
        (["s-maxage=soon"], False, None),
        ([], False, None),
    ],
)
def test_what_an_answer_allows_a_shared_cache(
    values: list[str], authorized: bool, lifetime: int | None
) -> None:
    assert shared_lifetime(values, authorized=authorized) == lifetime


def test_what_a_request_asks_of_the_cache() -> None:
    assert asks_fresh_fetch(["no-cache"])
    assert asks_fresh_fetch(["No-Store"])
    assert asks_fresh_fetch(["max-age=0"])
    assert not asks_fresh_fetch(["max-age=60"])
    assert not asks_fresh_fetch([])


def test_an_entry_survives_its_redis_encoding() -> None:
    body = b'{"a":"\r\n\r\n"}\r\n\r\n\xff'
    for headers in ((), (("Content-Type", "application/json"), ("ETag", '"v1"'))):
        entry = Entry(headers, body, 30)
        assert Entry.decode(entry.encode()) == entry
    with pytest.raises(ValueError):
        Entry.decode(b"30\nno head")


def _answer(status: int = 200, body: bytes = b"{}", **headers: str) -> web.Response:
    response = web.Response(status=status, body=body)
    response.headers.update({"Content-Type": "application/json", **headers})
    return response


def _kept(response: web.Response, *, own: tuple[str, ...] = (), size: int = 1024) -> Entry | None:
    """What the cache keeps of an answer: judged on its head, then taken whole."""
    assert isinstance(response.body, bytes)
    lifetime = shared_for(
        response.status,
        response.headers,
        len(response.body),
        whole=True,
        authorized=False,
        max_bytes=size,
        max_lifetime=300,
    )
    return None if lifetime is None else entry_of(response, own, lifetime, max_bytes=size)


def test_only_a_shared_200_within_the_size_is_kept_and_without_the_gateways_headers() -> None:
    shared = {"Cache-Control": "public, s-maxage=30"}
    entry = _kept(
        _answer(**shared, ETag='"v1"', **{"X-Request-ID": "r1", "X-Mine": "m"}), own=("X-Mine",)
    )
    assert entry is not None and entry.lifetime == 30
    assert {k for k, _ in entry.headers} == {"Content-Type", "Cache-Control", "ETag"}
    assert _kept(_answer(404, **shared)) is None
    assert _kept(_answer(**shared, **{"Content-Type": "application/problem+json"})) is None
    assert _kept(_answer(**shared, **{"Set-Cookie": "a=b"})) is None
    assert _kept(_answer(**shared, Vary="Origin")) is None
    assert _kept(_answer(**shared, Vary="Accept-Encoding")) is not None
    assert _kept(_answer(**shared, **{"Content-Encoding": "gzip"})) is None
    assert _kept(_answer(body=b"x" * 2000, **shared)) is None
    assert _kept(_answer(**{"Cache-Control": "public, s-maxage=9999"})).lifetime == 300  # type: ignore[union-attr]


def test_an_event_names_its_products_or_none_so_everything_goes() -> None:
    def event(kind: str, data: object) -> bytes:
        envelope = {"id": "1", "type": kind, "source": "/bazaar/catalog", "specversion": "1.0"}
        return json.dumps({**envelope, "data": data}).encode()

    assert products_named(event("catalog.product.updated", {"id": ID})) == [ID]
    assert products_named(event("catalog.product.deleted", {"product_id": ID})) == [ID]
    lines = {"reservation_id": "r", "lines": [{"product_id": ID}, {"product_id": "b"}]}
    assert products_named(event("catalog.stock.reserved", lines)) == [ID, "b"]
    assert products_named(event("catalog.stock.released", {"lines": []})) is None
    assert products_named(event("catalog.something.new", {"id": ID})) is None
    assert products_named(b"not json") is None


async def test_the_memory_store_keeps_the_least_recently_used_out_first() -> None:
    store = MemoryStore(max_entries=2, max_bytes=10_000)
    entry = Entry((), b"x", 30)
    a, b, c = (target_of("/v1/products", q) for q in ("limit=1", "limit=2", "limit=3"))
    assert a and b and c
    for target in (a, b):
        ticket, _ = await store.lookup(target)
        assert await store.store(target, ticket, entry, 0.0)
    await store.lookup(a)  # a is now the most recently used
    ticket, _ = await store.lookup(c)
    assert await store.store(c, ticket, entry, 0.0)
    assert (await store.lookup(a))[1] is not None
    assert (await store.lookup(b))[1] is None
    assert len(store) == 2


async def test_the_memory_store_bounds_its_bytes() -> None:
    store = MemoryStore(max_entries=100, max_bytes=250)
    targets = [target_of("/v1/products", f"limit={n}") for n in range(1, 6)]
    for target in targets:
        assert target
        ticket, _ = await store.lookup(target)
        await store.store(target, ticket, Entry((), b"x" * 100, 30), 0.0)
    assert store.bytes <= 250 and len(store) == 2


async def test_an_answer_fetched_before_an_invalidation_is_not_stored_after_it() -> None:
    clock = Clock()
    store = MemoryStore(max_entries=10, max_bytes=10_000, clock=clock)
    target = target_of(f"/v1/products/{ID}", "")
    lists = target_of("/v1/products", "")
    assert target and lists
    entry = Entry((), b"old", 30)
    ticket, _ = await store.lookup(target)
    list_ticket, _ = await store.lookup(lists)
    await store.drop([LISTS, ID])
    assert not await store.store(target, ticket, entry, 0.0)
    assert not await store.store(lists, list_ticket, entry, 0.0)
    ticket, _ = await store.lookup(target)
    assert await store.store(target, ticket, entry, 0.0)
    ticket, _ = await store.lookup(target)
    await store.drop(None)
    assert (await store.lookup(target))[1] is None
    assert not await store.store(target, ticket, entry, 0.0)
    ticket, _ = await store.lookup(target)
    clock.now += MAX_FETCH_SECONDS + 1
    assert not await store.store(target, ticket, entry, 0.0)


async def test_the_memory_store_reports_the_age_and_forgets_what_expired() -> None:
    clock = Clock()
    store = MemoryStore(max_entries=10, max_bytes=10_000, clock=clock)
    target = target_of("/v1/products", "")
    assert target
    ticket, _ = await store.lookup(target)
    await store.store(target, ticket, Entry((), b"x", 30), 2.0)
    clock.now += 5
    found = (await store.lookup(target))[1]
    assert found is not None and found.age == pytest.approx(7.0) and found.ttl == pytest.approx(23)
    clock.now += 23
    assert (await store.lookup(target))[1] is None and len(store) == 0


def test_trust_serves_old_entries_only_when_fetched_while_subscribed() -> None:
    clock = Clock()
    trust = Trust(clock)
    entry = Entry((), b"", 30)
    young, old = Found(entry, 0.9), Found(entry, 5.0)
    assert trust.allows(young) and not trust.allows(old)  # no events: 1 s at most
    trust.subscribed_since(clock.now)
    clock.now += 6
    assert trust.allows(old)  # fetched 1 s after the subscription began
    assert not trust.allows(Found(entry, 6.5))  # fetched before it
    assert not trust.allows(Found(entry, 30.0))  # no longer fresh
    trust.doubt()  # an invalidation failed now
    assert not trust.allows(old) and trust.allows(young)
    trust.lost()
    assert not trust.allows(Found(entry, 1.5)) and trust.allows(young)
