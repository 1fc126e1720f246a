"""Streaming both ways without whole-body buffering, hop-by-hop headers (RFC 9110 §7.6.1),
and content codings passed through untouched."""

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

from bazaar.gateway.config import DEFAULT_ROUTES, RouteConfig

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


async def test_a_request_body_streams_to_the_upstream_before_the_client_finished_sending(
    fakes, gateways
) -> None:
    size = 512 * 1024
    upstream_has_bytes = asyncio.Event()
    payload = os.urandom(size)

    async def reading(request: web.Request, _body: bytes) -> web.StreamResponse:
        digest, received = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            if not upstream_has_bytes.is_set():
                upstream_has_bytes.set()
            digest.update(chunk)
            received += len(chunk)
        return web.json_response({"length": received, "sha256": digest.hexdigest()})

    catalog = await fakes.upstream("catalog", reading)
    catalog.buffer_body = False
    client = await gateways.start({"catalog": catalog}, routes=PUBLIC)

    async def body() -> AsyncIterator[bytes]:
        yield payload[:FIRST]
        async with asyncio.timeout(5):  # a gateway buffering the body first never gets here
            await upstream_has_bytes.wait()
        yield payload[FIRST:]

    response = await client.post(
        "/v1/products/import",
        data=body(),
        headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
    )
    assert response.status == 200
    assert await response.json() == {
        "length": size,
        "sha256": hashlib.sha256(payload).hexdigest(),
    }


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
