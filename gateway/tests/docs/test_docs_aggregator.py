"""OpenApiAggregator against real aiohttp servers on 127.0.0.1: up, failing, hanging, gone."""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bazaar.gateway.docs import OpenApiAggregator

CONTRACTS = Path(__file__).resolve().parents[3] / "contracts" / "openapi"


def contract(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CONTRACTS / f"{name}.json").read_text("utf-8"))
    return loaded


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Upstream:
    """One fake service: its document and how it answers (ok, error, hang, garbage, slow)."""

    doc: dict[str, Any]
    mode: str = "ok"
    hits: int = 0
    delay: float = 0.0


@dataclass
class Upstreams:
    services: dict[str, Upstream]
    base: str
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}/openapi.json"

    @property
    def sources(self) -> dict[str, str]:
        return {name: self.url(name) for name in self.services}


@pytest_asyncio.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    services = {"auth": Upstream(contract("auth")), "catalog": Upstream(contract("catalog"))}
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        upstream = services[request.match_info["service"]]
        upstream.hits += 1
        if upstream.delay:
            await asyncio.sleep(upstream.delay)
        if upstream.mode == "hang":
            await release.wait()
        if upstream.mode == "error":
            return web.json_response({"detail": "boom"}, status=503)
        if upstream.mode == "garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if upstream.mode == "not-openapi":
            return web.json_response({"hello": "world"})
        return web.json_response(upstream.doc)

    app = web.Application()
    app.router.add_get("/{service}/openapi.json", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Upstreams(services, f"http://{host}:{port}", release)
    finally:
        release.set()
        await runner.cleanup()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/openapi.json"


def aggregator(
    session: aiohttp.ClientSession, sources: dict[str, str], clock: FakeClock, **kw: Any
) -> OpenApiAggregator:
    return OpenApiAggregator(session, sources, title="Bazaar", version="9", clock=clock, **kw)


async def test_merges_every_service(upstreams: Upstreams, session: aiohttp.ClientSession) -> None:
    agg = aggregator(session, upstreams.sources, FakeClock())
    doc = await agg.document()
    assert doc["info"]["title"] == "Bazaar" and doc["info"]["version"] == "9"
    assert {"/v1/auth/token", "/v1/products/{product_id}", "/v1/users/me"} <= set(doc["paths"])
    assert not [p for p in doc["paths"] if p.startswith("/v1/reservations")]
    assert "x-bazaar-missing" not in doc and "x-bazaar-stale" not in doc
    assert [u.hits for u in upstreams.services.values()] == [1, 1]


async def test_cached_for_ttl_then_fetched_again(
    upstreams: Upstreams, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    agg = aggregator(session, upstreams.sources, clock, ttl=60.0)
    first = await agg.document()
    clock.now += 59.9
    assert await agg.document() is first
    assert upstreams.services["auth"].hits == 1

    upstreams.services["auth"].doc["paths"]["/v1/auth/new"] = {
        "get": {"operationId": "new", "responses": {"200": {"description": "ok"}}}
    }
    clock.now += 0.2
    second = await agg.document()
    assert second is not first
    assert "/v1/auth/new" in second["paths"]
    assert [u.hits for u in upstreams.services.values()] == [2, 2]

    agg.invalidate()
    await agg.document()
    assert upstreams.services["auth"].hits == 3


async def test_a_failing_service_is_served_from_its_last_good_document(
    upstreams: Upstreams, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    agg = aggregator(session, upstreams.sources, clock, ttl=60.0)
    await agg.document()

    upstreams.services["catalog"].mode = "error"
    upstreams.services["auth"].doc["paths"]["/v1/auth/fresh"] = {
        "get": {"operationId": "fresh", "responses": {"200": {"description": "ok"}}}
    }
    clock.now += 61
    doc = await agg.document()
    assert "/v1/products/{product_id}" in doc["paths"]  # catalog's last good document
    assert "/v1/auth/fresh" in doc["paths"]  # auth's fresh one
    assert doc["x-bazaar-stale"] == ["catalog"]
    assert "x-bazaar-missing" not in doc

    # While a service is stale the document is rebuilt sooner (retry_ttl, 5 s by default).
    clock.now += 4.9
    assert await agg.document() is doc
    upstreams.services["catalog"].mode = "ok"
    clock.now += 0.2
    healed = await agg.document()
    assert "x-bazaar-stale" not in healed
    assert upstreams.services["catalog"].hits == 3


@pytest.mark.parametrize("mode", ["error", "garbage", "not-openapi"])
async def test_a_service_never_fetched_is_missing_and_marked(
    upstreams: Upstreams, session: aiohttp.ClientSession, mode: str
) -> None:
    upstreams.services["catalog"].mode = mode
    doc = await aggregator(session, upstreams.sources, FakeClock()).document()
    assert doc["x-bazaar-missing"] == ["catalog"]
    assert "/v1/auth/token" in doc["paths"]
    assert not [p for p in doc["paths"] if p.startswith("/v1/products")]


async def test_a_hanging_service_costs_at_most_the_timeout(
    upstreams: Upstreams, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    agg = aggregator(session, upstreams.sources, clock, timeout=0.3)
    await agg.document()
    upstreams.services["auth"].mode = "hang"
    clock.now += 61
    started = time.perf_counter()
    doc = await agg.document()
    elapsed = time.perf_counter() - started
    assert 0.25 < elapsed < 2.0, elapsed
    assert doc["x-bazaar-stale"] == ["auth"]
    assert "/v1/auth/token" in doc["paths"] and "/v1/products" in doc["paths"]


async def test_a_refused_connection_never_raises(
    upstreams: Upstreams, session: aiohttp.ClientSession
) -> None:
    sources = {"auth": closed_port_url(), "catalog": upstreams.url("catalog")}
    doc = await aggregator(session, sources, FakeClock()).document()
    assert doc["x-bazaar-missing"] == ["auth"]
    assert "/v1/products" in doc["paths"]


async def test_every_service_down_gives_an_empty_document(session: aiohttp.ClientSession) -> None:
    sources = {"auth": closed_port_url(), "catalog": closed_port_url()}
    doc = await aggregator(session, sources, FakeClock()).document()
    assert doc["paths"] == {}
    assert doc["x-bazaar-missing"] == ["auth", "catalog"]
    assert doc["openapi"].startswith("3.1")


async def test_concurrent_callers_share_one_refresh(
    upstreams: Upstreams, session: aiohttp.ClientSession
) -> None:
    for upstream in upstreams.services.values():
        upstream.delay = 0.1
    agg = aggregator(session, upstreams.sources, FakeClock())
    docs = await asyncio.gather(*(agg.document() for _ in range(8)))
    assert all(d is docs[0] for d in docs)
    assert [u.hits for u in upstreams.services.values()] == [1, 1]


async def test_a_caller_going_away_does_not_cancel_the_refresh(
    upstreams: Upstreams, session: aiohttp.ClientSession
) -> None:
    for upstream in upstreams.services.values():
        upstream.delay = 0.2
    agg = aggregator(session, upstreams.sources, FakeClock())
    impatient = asyncio.create_task(agg.document())
    await asyncio.sleep(0.05)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    doc = await agg.document()
    assert "x-bazaar-missing" not in doc
    assert [u.hits for u in upstreams.services.values()] == [1, 1]


async def test_the_documents_fetched_are_not_changed(
    upstreams: Upstreams, session: aiohttp.ClientSession
) -> None:
    before = copy.deepcopy(upstreams.services["catalog"].doc)
    await aggregator(session, upstreams.sources, FakeClock()).document()
    assert upstreams.services["catalog"].doc == before


async def test_an_oversized_document_is_refused(
    upstreams: Upstreams, session: aiohttp.ClientSession
) -> None:
    doc = await aggregator(session, upstreams.sources, FakeClock(), max_bytes=1000).document()
    assert doc["x-bazaar-missing"] == ["auth", "catalog"]
