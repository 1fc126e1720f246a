"""Served by the EdgeRunner, a request for no path of the gateway's own routes skips
aiohttp's router and the Application's dispatch (`bazaar.gateway.edge.direct`): the outcome
must be the router's whatever the path looks like, and the fast path must really be taken."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from bazaar.gateway import edge
from bazaar.gateway.app import create_app

# Paths as they go on the wire (no client normalises them), and who serves a GET of each:
# an own route (through the router), the pipeline (a problem) or an upstream (both without
# the router), or the pipeline after the router found no own route for it.
PATHS = {
    "/healthz": "gateway",
    "/healthz/": "pipeline",
    "/HEALTHZ": "pipeline",
    "/%68ealthz": "gateway",  # decoded, it is /healthz
    "//healthz": "pipeline",
    "/healthz?x=1": "gateway",
    "/healthz%2F": "pipeline",
    "/./healthz": "pipeline",  # aiohttp removes no dot segments
    "/docs/../healthz": "pipeline",
    "/healthzx": "pipeline",
    "/docs": "gateway",
    "/docs/": "pipeline",
    "/docs/static": "pipeline",
    "/docs/static/init.js": "gateway",
    "/docs/static%2Finit.js": "router",  # may be /docs/static/{name}: the router decides
    "/metrics": "gateway",
    "/metrics/": "pipeline",
    "/.well-known/x": "upstream",  # auth's JWKS prefix
    "/v1/products/1": "upstream",
    "/v1/products/1/": "upstream",
    "/v1/%70roducts/1": "upstream",
}
METHODS = ["GET", "HEAD", "OPTIONS", "POST", "DELETE"]


async def _raw(port: int, method: str, path: str) -> tuple[str, dict[str, str | None], bool]:
    """The status line, a few headers, and whether an upstream answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        async with asyncio.timeout(5):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    kept = {name: headers.get(name) for name in ("content-type", "allow", "x-frame-options")}
    return status, kept, b'"upstream"' in body


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every request aiohttp's Application dispatch (its router) handled."""
    seen: list[str] = []
    handle = web.Application._handle

    async def counting(self: web.Application, request: web.Request) -> web.StreamResponse:
        seen.append(request.raw_path)
        return await handle(self, request)

    monkeypatch.setattr(web.Application, "_handle", counting)
    return seen


@pytest.fixture
async def upstreams(fakes: Any) -> dict[str, Any]:
    return {name: await fakes.upstream(name) for name in ("auth", "catalog", "orders")}


@pytest.mark.parametrize(("path", "served_by"), PATHS.items(), ids=list(PATHS))
async def test_only_the_gateways_own_paths_go_through_the_router(
    gateways: Any, upstreams: dict[str, Any], dispatched: list[str], path: str, served_by: str
) -> None:
    client = await gateways.start(upstreams)
    status, headers, upstream = await _raw(client.server.port, "GET", path)
    assert dispatched == ([path] if served_by in ("gateway", "router") else []), dispatched
    if served_by == "gateway":
        assert status == "HTTP/1.1 200 OK"
    elif served_by in ("pipeline", "router"):
        assert status == "HTTP/1.1 404 Not Found"
        assert headers["content-type"] == "application/problem+json"
    else:
        assert status == "HTTP/1.1 200 OK" and upstream


async def test_every_method_and_path_is_answered_as_the_router_would(
    gateways: Any, upstreams: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = await gateways.start(upstreams)
    monkeypatch.setattr(edge, "direct", lambda _app, handler: handler)
    routed = await gateways.start(upstreams)
    differences = []
    for method in METHODS:
        for path in PATHS:
            fast = await _raw(direct.server.port, method, path)
            slow = await _raw(routed.server.port, method, path)
            if fast != slow:
                differences.append((method, path, fast, slow))
    assert differences == []


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _late(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"late": True})


async def test_a_route_added_after_the_app_was_made_is_served_by_it(
    gateways: Any, upstreams: dict[str, Any]
) -> None:
    # aiohttp's router finds a plain path before the catch-all whenever it was added.
    app = create_app(gateways.settings(upstreams))
    app.router.add_get("/late", _late)

    async def on_startup(app: web.Application) -> None:
        app.router.add_get("/later", _late)

    app.on_startup.append(on_startup)
    client = await gateways.serve(app)
    for path in ("/late", "/later"):
        response = await client.get(path)
        assert response.status == 200, path
        assert await response.json() == {"late": True}


async def test_an_app_with_middlewares_is_always_dispatched_by_aiohttp(
    gateways: Any, upstreams: dict[str, Any], dispatched: list[str]
) -> None:
    @web.middleware
    async def marking(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers["X-Middleware"] = "ran"
        return response

    app = create_app(gateways.settings(upstreams))
    app.middlewares.append(marking)
    client = await gateways.serve(app)
    response = await client.get("/v1/products/1")
    assert response.status == 200
    assert response.headers.get("X-Middleware") == "ran"
    assert dispatched == ["/v1/products/1"]
