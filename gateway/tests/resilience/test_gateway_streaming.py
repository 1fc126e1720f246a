"""Answers streamed without whole-body buffering, request bodies read whole (bounded) before
they go upstream, hop-by-hop headers (RFC 9110 §7.6.1), content codings passed through."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bazaar.gateway.config import DEFAULT_ROUTES, RouteConfig, UpstreamConfig

BIG = 20 * 1024 * 1024
FIRST = 64 * 1024
PUBLIC = (
    RouteConfig(prefix="/v1/products", upstream="catalog", auth="public", timeout=30.0),
    *DEFAULT_ROUTES,
)


@pytest.fixture(scope="module")
def big_body() -> bytes:
    """20 MiB that do not compress (so nothing on the way can shrink them unnoticed)."""
    return os.urandom(BIG)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_large_answer_streams_through_complete_without_being_buffered_whole(
    fakes, gateways, big_body: bytes, framing: str
) -> None:
    proceed, finished = asyncio.Event(), asyncio.Event()

    async def slow_big(request: web.Request, _body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if framing == "content-length":
            response.content_length = len(big_body)
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(big_body[:FIRST])
        await proceed.wait()  # the rest only once the client holds the first bytes
        for start in range(FIRST, len(big_body), 1024 * 1024):
            await response.write(big_body[start : start + 1024 * 1024])
        await response.write_eof()
        finished.set()
        return response

    catalog = await fakes.upstream("catalog", slow_big)
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)
    started = time.perf_counter()
    response = await client.get("/v1/products/export")
    assert response.status == 200
    async with asyncio.timeout(5):  # a gateway reading the whole answer first never gets here
        first = await response.content.readexactly(FIRST)
    time_to_first_byte = time.perf_counter() - started
    assert not finished.is_set()
    assert time_to_first_byte < 2.0
    proceed.set()
    digest = hashlib.sha256(first)
    received = len(first)
    async for chunk in response.content.iter_chunked(1024 * 1024):
        digest.update(chunk)
        received += len(chunk)
    assert received == len(big_body)
    assert digest.hexdigest() == hashlib.sha256(big_body).hexdigest()
    if framing == "content-length":
        assert response.headers["Content-Length"] == str(len(big_body))


async def test_a_request_body_reaches_the_upstream_whole_and_only_once_the_client_sent_it_all(
    fakes, gateways
) -> None:
    # A body is read whole (bounded) before anything goes upstream: a client stalling or
    # aborting its upload must cost the upstream nothing (API.md, "Limits and failures").
    size = 512 * 1024
    payload = os.urandom(size)

    async def reading(request: web.Request, _body: bytes) -> web.StreamResponse:
        received = await request.read()
        return web.json_response(
            {"length": len(received), "sha256": hashlib.sha256(received).hexdigest()}
        )

    catalog = await fakes.upstream("catalog", reading)
    catalog.buffer_body = False  # counted as soon as the head is in, before the body
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)
    first_part_sent = asyncio.Event()
    upstream_hits_meanwhile: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield payload[:FIRST]
        first_part_sent.set()
        await asyncio.sleep(0.3)  # time enough for a streaming proxy to start forwarding
        upstream_hits_meanwhile.append(catalog.hits)
        yield payload[FIRST:]

    response = await client.post(
        "/v1/products/import",
        data=body(),
        headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
    )
    received = await response.json()
    assert response.status == 200
    assert first_part_sent.is_set()
    assert upstream_hits_meanwhile == [0]
    assert received == {"length": size, "sha256": hashlib.sha256(payload).hexdigest()}


async def test_a_large_answer_cut_off_by_the_upstream_does_not_arrive_as_complete(
    fakes, gateways
) -> None:
    async def cut(_reader, writer, _hit: int) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000000\r\n\r\n" + b"z" * 200_000
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        fakes.reset(writer)

    catalog = await fakes.raw(cut)
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)
    response = await client.get("/v1/products/export")
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def _raw(url: str, head: bytes) -> bytes:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(65536)
    finally:
        writer.close()
        await writer.wait_closed()


REQUEST_HOP_HEADERS = ("X-Hop-Req", "Keep-Alive", "TE", "Trailer", "Proxy-Authorization")


async def test_hop_by_hop_request_headers_are_not_forwarded(fakes, gateways) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)
    head = (
        b"GET /v1/products HTTP/1.1\r\nHost: gateway\r\n"
        b"Connection: close, X-Hop-Req\r\nX-Hop-Req: secret\r\nKeep-Alive: timeout=5\r\n"
        b"TE: trailers\r\nTrailer: X-Checksum\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n"
        b"Proxy-Connection: keep-alive\r\nX-End-To-End: kept\r\n\r\n"
    )
    answer = await _raw(str(client.make_url("")), head)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    received = catalog.seen[0].headers
    assert [name for name in REQUEST_HOP_HEADERS if name in received] == []
    assert "Proxy-Connection" not in received
    assert "x-hop-req" not in received.get("Connection", "").lower()
    assert received["X-End-To-End"] == "kept"


async def test_an_upgrade_request_header_is_not_forwarded(fakes, gateways) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)
    response = await client.get("/v1/products", headers={"Upgrade": "h2c"})
    assert response.status == 200
    assert "Upgrade" not in catalog.seen[0].headers


async def test_hop_by_hop_answer_headers_are_not_forwarded(fakes, gateways) -> None:
    async def hoppy(_reader, writer, _hit: int) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
            b"Connection: close, X-Hop-Resp\r\nX-Hop-Resp: secret\r\nKeep-Alive: timeout=5\r\n"
            b"Proxy-Authenticate: Basic\r\nTrailer: X-Checksum\r\nUpgrade: h2c\r\n"
            b"X-End-To-End: kept\r\n\r\nok"
        )
        await writer.drain()
        writer.close()

    catalog = await fakes.raw(hoppy)
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)
    response = await client.get("/v1/products")
    assert response.status == 200
    assert await response.read() == b"ok"
    for name in ("X-Hop-Resp", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade"):
        assert name not in response.headers, name
    connection = response.headers.get("Connection", "").lower()
    assert "x-hop-resp" not in connection
    assert "close" not in connection  # the upstream's connection is not the client's
    assert response.headers["X-End-To-End"] == "kept"


async def test_a_request_without_a_body_is_forwarded_without_one(fakes, gateways) -> None:
    catalog = await fakes.raw(
        lambda _r, w, _h: _ok(w)  # type: ignore[arg-type,return-value]
    )
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)
    response = await client.get("/v1/products")
    assert response.status == 200
    head = catalog.heads[0].lower()
    assert b"transfer-encoding" not in head, head
    assert catalog.bodies == [b""]


async def _ok(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()


@pytest.mark.parametrize("size", [2_000, 3_000_000], ids=["small", "streamed"])
async def test_content_encoding_passes_through_untouched_both_ways(
    fakes, gateways, size: int
) -> None:
    plain = os.urandom(size // 2).hex().encode()[:size]
    encoded = gzip.compress(plain)

    async def gzipped(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(
            body=encoded,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    catalog = await fakes.upstream("catalog", gzipped)
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)
    async with aiohttp.ClientSession(auto_decompress=False) as raw_client:
        response = await raw_client.get(
            client.make_url("/v1/products"), headers={"Accept-Encoding": "gzip"}
        )
        body = await response.read()
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert body == encoded
    assert gzip.decompress(body) == plain
    assert catalog.seen[0].headers.getall("Accept-Encoding") == ["gzip"]


async def test_a_compressed_request_body_reaches_the_upstream_as_sent(fakes, gateways) -> None:
    catalog = await fakes.raw(lambda _r, w, _h: _ok(w))  # type: ignore[arg-type,return-value]
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)
    plain = b'{"name": "' + b"z" * 500 + b'"}'
    encoded = gzip.compress(plain)
    response = await client.post(
        "/v1/products",
        data=encoded,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status == 200
    head = catalog.heads[0].lower()
    assert b"content-encoding: gzip" in head
    assert f"content-length: {len(encoded)}".encode() in head
    assert catalog.bodies == [encoded]


# -- long answers: the route's timeout covers the head, an idle timeout the stream ---------------


def _sse_routes(timeout: float) -> tuple[RouteConfig, ...]:
    return (RouteConfig(prefix="/v1/orders", upstream="orders", auth="public", timeout=timeout),)


async def test_an_event_stream_outlives_the_route_timeout_and_each_event_arrives_at_once(
    fakes, gateways, expect
) -> None:
    sent: list[float] = []

    async def events(request: web.Request, _body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        for n in range(6):
            sent.append(time.perf_counter())
            await response.write(f"event: order\nid: {n}\ndata: {{}}\n\n".encode())
            await asyncio.sleep(0.3)
        await response.write_eof()
        return response

    orders = await fakes.upstream("orders", events)
    client = await gateways.start({"orders": orders}, routes=_sse_routes(timeout=0.5))
    response = await client.get("/v1/orders/o-1/events")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    arrived: list[tuple[str, float]] = []
    async for line in response.content:
        if line.startswith(b"id:"):
            arrived.append((line.decode().strip(), time.perf_counter()))
    assert [n for n, _ in arrived] == [f"id: {n}" for n in range(6)]  # 1.8 s > 0.5 s
    delays = [at - sent[n] for n, (_, at) in enumerate(arrived)]
    assert max(delays) < 0.2, delays  # none held back (buffered) by the gateway
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_upstream_errors_total", upstream="orders") == 0


async def test_a_large_answer_to_a_slow_reader_is_complete_and_never_an_upstream_stall(
    fakes, gateways, expect
) -> None:
    body = os.urandom(24 * 1024 * 1024)  # more than the sockets' buffers between us hold

    async def big(request: web.Request, _body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), 256 * 1024):
            await response.write(body[start : start + 256 * 1024])
        await response.write_eof()
        return response

    catalog = await fakes.upstream("catalog", big)
    config = UpstreamConfig(url=catalog.url, stream_idle_seconds=0.5)
    routes = (RouteConfig(prefix="/v1/products", upstream="catalog", auth="public", timeout=0.5),)
    client = await gateways.start({"catalog": config}, routes=routes)
    response = await client.get("/v1/products/export")
    assert response.status == 200
    received = bytearray(await response.content.readexactly(64 * 1024))
    await asyncio.sleep(1.2)  # the gateway is blocked writing to us, past both timeouts
    async for chunk in response.content.iter_chunked(1024 * 1024):
        received += chunk
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_upstream_errors_total", upstream="catalog") == 0


async def test_a_stream_the_upstream_leaves_idle_is_cut_after_the_idle_time(
    fakes, gateways, expect
) -> None:
    async def silent(request: web.Request, _body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: order\nid: 0\ndata: {}\n\n")
        await asyncio.sleep(3600)  # no keep-alive comments
        return response

    orders = await fakes.upstream("orders", silent)
    config = UpstreamConfig(url=orders.url, stream_idle_seconds=0.6)
    client = await gateways.start({"orders": config}, routes=_sse_routes(timeout=5.0))
    started = time.perf_counter()
    response = await client.get("/v1/orders/o-1/events")
    assert await response.content.readline() == b"event: order\n"
    with pytest.raises(aiohttp.ClientPayloadError):  # cut, not ended as if complete
        async with asyncio.timeout(5):
            await response.read()
    assert 0.5 <= time.perf_counter() - started < 2.0
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_upstream_errors_total", upstream="orders", kind="idle") == 1
    assert metrics.value("bazaar_circuit_breaker_state", dependency="orders") == 0
