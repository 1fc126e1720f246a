"""Server-Sent Events through the gateway (API.md "Order status stream"): each event passed
on as it comes, no route timeout but an idle one, one rate-limit count per stream, at most
20 open streams per user, and a shutdown that ends streams cleanly."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bazaar.gateway.config import DEFAULT_ROUTES, RouteConfig, UpstreamConfig
from bazaar.gateway.routes import RouteTable
from bazaar.shared.testing.tokens import TokenIssuer

from .conftest import EVENT_STREAM, KEEP_ALIVE, SseUpstream, event, metric

ORDER = str(uuid.uuid4())
PATH = f"/v1/orders/{ORDER}/events"
EVENTS_ROUTE = "/v1/orders/{id}/events"


def asking(token_issuer: TokenIssuer, user: str = "alice", *, accept: bool = True) -> dict:
    """Headers of a stream request by `user` (as EventSource sends them with `accept`)."""
    headers = {"Authorization": f"Bearer {token_issuer.issue(user)}"}
    if accept:
        headers["Accept"] = EVENT_STREAM
    return headers


def with_events_route(**changes: Any) -> tuple[RouteConfig, ...]:
    """The default routes, the events route changed."""
    return tuple(
        r.model_copy(update=changes) if r.prefix == EVENTS_ROUTE else r for r in DEFAULT_ROUTES
    )


async def read_block(response: aiohttp.ClientResponse, seconds: float = 2.0) -> bytes:
    """The next event or comment (up to its blank line)."""
    async with asyncio.timeout(seconds):
        return await response.content.readuntil(b"\n\n")


async def scrape(session: aiohttp.ClientSession, url: str) -> str:
    """The gateway's /metrics page."""
    async with session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_each_small_event_reaches_the_client_within_50_ms_of_the_upstream_sending_it(
    fakes, live, token_issuer: TokenIssuer
) -> None:
    upstream = SseUpstream()
    gateway = await live({"orders": await fakes.upstream("orders", upstream)})
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        headers = {**asking(token_issuer), "Accept-Encoding": "gzip, deflate, br"}
        response = await session.get(f"{gateway.url}{PATH}", headers=headers)
        assert response.status == 200
        assert response.headers["Content-Type"] == EVENT_STREAM
        assert "Content-Encoding" not in response.headers  # never compressed (nor held back)
        (feed,) = await upstream.wait_open(1)
        delays = []
        for n in range(20):
            queued = time.perf_counter()
            feed.queue.put_nowait(event(n))  # 33 bytes: far below any buffer's flush size
            assert await read_block(response) == event(n)
            delays.append(time.perf_counter() - queued)
            await asyncio.sleep(0.01)
        response.close()
    assert max(delays) < 0.05, [round(d * 1000, 1) for d in delays]


async def test_a_stream_kept_alive_by_comments_outlives_the_route_and_the_idle_timeout(
    fakes, live, token_issuer: TokenIssuer
) -> None:
    upstream = SseUpstream(keepalive=0.15)
    orders = await fakes.upstream("orders", upstream)
    gateway = await live(
        {"orders": UpstreamConfig(url=orders.url, stream_idle_seconds=0.5)},
        routes=with_events_route(timeout=0.3),
    )
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{gateway.url}{PATH}", headers=asking(token_issuer))
        assert response.status == 200
        (feed,) = await upstream.wait_open(1)
        feed.queue.put_nowait(event(1))
        assert await read_block(response) == event(1)
        started = time.perf_counter()
        comments = 0
        while time.perf_counter() - started < 1.5:  # 5x the route's, 3x the idle timeout
            assert await read_block(response) == KEEP_ALIVE
            comments += 1
        feed.queue.put_nowait(event(2))
        feed.queue.put_nowait(None)
        rest = await response.content.read()  # to the end: complete, not cut
        assert rest.replace(KEEP_ALIVE, b"") == event(2)
        assert comments >= 5
        page = await scrape(session, gateway.url)
    assert metric(page, "gateway_upstream_errors_total") == 0
    assert metric(page, "gateway_open_streams") == 0


async def test_a_stream_silent_for_longer_than_the_idle_timeout_is_cut_and_frees_its_place(
    fakes, live, token_issuer: TokenIssuer
) -> None:
    upstream = SseUpstream()  # no keep-alive comments
    orders = await fakes.upstream("orders", upstream)
    gateway = await live(
        {"orders": UpstreamConfig(url=orders.url, stream_idle_seconds=0.5)},
        max_streams_per_user=1,
    )
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{gateway.url}{PATH}", headers=asking(token_issuer))
        (feed,) = await upstream.wait_open(1)
        feed.queue.put_nowait(event(0))
        assert await read_block(response) == event(0)
        silent_from = time.perf_counter()
        with pytest.raises(aiohttp.ClientPayloadError):  # cut, not ended as if complete
            async with asyncio.timeout(5):
                await response.content.read()
        assert 0.4 <= time.perf_counter() - silent_from < 2.0
        response.close()
        await asyncio.sleep(0.1)
        feed.queue.put_nowait(event(1))  # too late: the upstream's connection is closed too
        async with asyncio.timeout(5):
            await feed.over.wait()
        assert feed.left
        page = await scrape(session, gateway.url)
        assert metric(page, "gateway_upstream_errors_total", upstream="orders", kind="idle") == 1
        assert metric(page, "gateway_open_streams") == 0
        again = await session.get(f"{gateway.url}{PATH}", headers=asking(token_issuer))
        assert again.status == 200  # the cut stream's place is free (the limit is 1 here)
        again.close()


async def test_a_user_holds_at_most_20_streams_the_21st_is_a_429_and_a_closed_one_frees_a_place(
    fakes, live, token_issuer: TokenIssuer, expect
) -> None:
    upstream = SseUpstream(keepalive=0.1)
    gateway = await live({"orders": await fakes.upstream("orders", upstream)})
    url = f"{gateway.url}{PATH}"
    alice = asking(token_issuer, "alice")
    async with aiohttp.ClientSession() as session:
        streams = [await session.get(url, headers=alice) for _ in range(20)]
        assert [s.status for s in streams] == [200] * 20
        await upstream.wait_open(20)

        refused = await session.get(url, headers=alice)
        problem = await expect.problem(refused, 429, "rate-limited")
        assert "20" in problem["detail"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert "RateLimit" in refused.headers and "RateLimit-Policy" in refused.headers
        await asyncio.sleep(0.2)
        assert len(upstream.feeds) == 20  # asked for a stream: refused before the upstream

        # Without `Accept: text/event-stream` the answer's head tells: refused then, and the
        # upstream's stream is closed at once.
        blind = await session.get(url, headers=asking(token_issuer, "alice", accept=False))
        await expect.problem(blind, 429, "rate-limited")
        (*_, unasked) = await upstream.wait_open(21)
        async with asyncio.timeout(5):
            await unasked.over.wait()

        bob = await session.get(url, headers=asking(token_issuer, "bob"))
        assert bob.status == 200  # one user's limit is not another's
        page = await scrape(session, gateway.url)
        assert metric(page, "gateway_open_streams") == 21
        assert metric(page, "gateway_streams_refused_total") == 2

        streams[0].close()  # the client goes away
        async with asyncio.timeout(5):
            await upstream.feeds[0].over.wait()
        replacement = await session.get(url, headers=alice)
        assert replacement.status == 200
        assert await read_block(replacement) == KEEP_ALIVE
        for response in (*streams[1:], bob, replacement):
            response.close()


async def test_a_stream_counts_once_against_the_rate_limit_however_long_it_runs(
    fakes, live, token_issuer: TokenIssuer
) -> None:
    upstream = SseUpstream(keepalive=0.05)
    gateway = await live({"orders": await fakes.upstream("orders", upstream)})
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{gateway.url}{PATH}", headers=asking(token_issuer))
        assert response.status == 200
        assert response.headers["RateLimit"].startswith('"user";r=1199;')
        (feed,) = await upstream.wait_open(1)
        for n in range(10):
            feed.queue.put_nowait(event(n))
            await asyncio.sleep(0.05)
        feed.queue.put_nowait(None)
        body = await response.content.read()
        assert body.replace(KEEP_ALIVE, b"") == b"".join(event(n) for n in range(10))
        page = await scrape(session, gateway.url)
    assert metric(page, "gateway_rate_limit_decisions_total", policy="user") == 1
    assert metric(page, "gateway_rate_limit_decisions_total") == 1


async def test_shutdown_ends_open_streams_cleanly_drains_requests_and_clients_resume_elsewhere(
    fakes, live, token_issuer: TokenIssuer
) -> None:
    upstream = SseUpstream(keepalive=0.2)
    orders = await fakes.upstream("orders", upstream)
    slow_started = asyncio.Event()

    async def slow(_request: web.Request, _body: bytes) -> web.StreamResponse:
        slow_started.set()
        await asyncio.sleep(0.8)
        return web.json_response({"items": [], "next_cursor": None})

    catalog = await fakes.upstream("catalog", slow)
    upstreams = {"orders": orders, "catalog": catalog}
    leaving = await live(upstreams, shutdown_timeout=10.0)
    staying = await live(upstreams)
    async with aiohttp.ClientSession() as session:
        streams = [
            await session.get(f"{leaving.url}{PATH}", headers=asking(token_issuer))
            for _ in range(3)
        ]
        feeds = await upstream.wait_open(3)
        for feed in feeds:
            for n in (1, 2):
                feed.queue.put_nowait(event(n))
        for response in streams:
            assert await read_block(response) == event(1)
        in_flight = asyncio.create_task(session.get(f"{leaving.url}/v1/products"))
        async with asyncio.timeout(5):
            await slow_started.wait()

        started = time.perf_counter()
        cleanup = leaving.shut_down()
        for response in streams:
            async with asyncio.timeout(2):
                rest = await response.content.read()  # ClientPayloadError if cut or reset
            assert rest.replace(KEEP_ALIVE, b"") == event(2)  # everything sent, then the end
        ended = time.perf_counter() - started
        with pytest.raises(aiohttp.ClientConnectorError):  # no longer accepting
            await session.get(f"{leaving.url}/healthz")
        answer = await in_flight  # a request in flight is let finish
        assert answer.status == 200
        assert await answer.json() == {"items": [], "next_cursor": None}
        async with asyncio.timeout(10):
            await cleanup
        stopped = time.perf_counter() - started

        # The client resumes on another replica from the last event it got.
        resumed = await session.get(
            f"{staying.url}{PATH}", headers={**asking(token_issuer), "Last-Event-ID": "2"}
        )
        assert resumed.status == 200
        (*_, feed) = await upstream.wait_open(4)
        assert feed.last_event_id == "2"
        resumed.close()
    assert ended < 0.5, ended  # at once, not at the end of the 10 s grace
    assert stopped < 2.0, stopped  # the slow request's 0.8 s, not the grace


async def test_the_events_route_needs_orders_read_and_is_measured_as_its_own_route(
    fakes, gateways, token_issuer: TokenIssuer, expect
) -> None:
    upstream = SseUpstream()
    orders = await fakes.upstream("orders", upstream)
    client = await gateways.start({"orders": orders})
    lacking = {"Authorization": f"Bearer {token_issuer.issue('alice', ('orders:write',))}"}
    await expect.problem(await client.get(PATH, headers=lacking), 403, "forbidden")
    assert orders.hits == 0
    response = await client.get(PATH, headers=asking(token_issuer))
    assert response.status == 200
    (feed,) = await upstream.wait_open(1)
    feed.queue.put_nowait(None)
    await response.read()
    metrics = await expect.metrics(client)
    answered = {
        (labels["http_route"], labels["http_response_status_code"])
        for labels in metrics.labels("http_server_request_duration_seconds_count")
    }
    assert answered == {(EVENTS_ROUTE, "403"), (EVENTS_ROUTE, "200")}


@pytest.mark.parametrize(
    ("method", "path", "label"),
    [
        ("GET", "/v1/orders/0b7c/events", EVENTS_ROUTE),
        ("GET", "/v1/orders/0b7c/events/", EVENTS_ROUTE),
        ("POST", "/v1/orders/0b7c/events", "/v1/orders"),
        ("GET", "/v1/orders/0b7c", "/v1/orders"),
        ("GET", "/v1/orders//events", "/v1/orders"),
        ("GET", "/v1/orders/0b7c/eventsx", "/v1/orders"),
        ("GET", "/v1/orders/a/b/events", "/v1/orders"),
        ("GET", "/v1/orders", "/v1/orders"),
    ],
)
def test_a_segment_written_in_braces_matches_one_path_segment(
    method: str, path: str, label: str
) -> None:
    route = RouteTable(DEFAULT_ROUTES).match(method, path)
    assert route is not None
    assert route.label == label
