"""Limits and upstream failures (API.md "Limits and failures"): 413, 502, 504, the breaker's
503, safe retries, bounded concurrency, and what an upstream's own 500 becomes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bazaar.gateway.config import DEFAULT_ROUTES, RouteConfig, UpstreamConfig
from bazaar.shared.testing.tokens import TokenIssuer

LIMIT = 4096
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/catalog/service/products.py", line 42, in create\n'
    "    price = total / quantity\n"
    "ZeroDivisionError: division by zero\n"
)


def _routes(timeout: float = 10.0) -> tuple[RouteConfig, ...]:
    """The default table with catalog's routes open to anyone (this module tests failures,
    not authentication), on the given timeout."""
    fast = [
        RouteConfig(
            prefix="/v1/products",
            upstream="catalog",
            methods=("GET", "HEAD"),
            auth="public",
            timeout=timeout,
        ),
        RouteConfig(prefix="/v1/products", upstream="catalog", auth="public", timeout=timeout),
    ]
    return (*fast, *DEFAULT_ROUTES)


async def _chunks(total: int, size: int = 1000) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b"y" * part


# -- body size ------------------------------------------------------------------------------


async def test_a_body_over_the_limit_with_content_length_is_a_413_and_never_sent_upstream(
    fakes, gateways, expect
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, max_body_bytes=LIMIT, routes=_routes())
    response = await client.post("/v1/products/upload", data=b"x" * (LIMIT + 1))
    await expect.problem(response, 413, "payload-too-large")
    assert catalog.hits == 0


async def test_a_chunked_body_over_the_limit_is_a_413_and_never_sent_upstream(
    fakes, gateways, token_issuer: TokenIssuer, expect
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, max_body_bytes=LIMIT, routes=_routes())
    response = await client.post("/v1/products/upload", data=_chunks(LIMIT * 3))
    await expect.problem(response, 413, "payload-too-large")
    assert catalog.hits == 0


async def test_a_413_comes_before_authentication_so_nothing_is_verified_or_sent(
    fakes, gateways, expect
) -> None:
    orders = await fakes.upstream("orders")
    client = await gateways.start({"orders": orders}, max_body_bytes=LIMIT)
    response = await client.post("/v1/orders", data=b"x" * (LIMIT + 1))
    await expect.problem(response, 413, "payload-too-large")
    assert orders.hits == 0


@pytest.mark.parametrize(("size", "status"), [(1024 * 1024, 200), (1024 * 1024 + 1, 413)])
async def test_the_default_body_limit_is_one_mebibyte(
    fakes, gateways, size: int, status: int
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    response = await client.post("/v1/products/upload", data=io.BytesIO(b"y" * size))
    await response.read()
    assert response.status == status
    assert catalog.hits == (1 if status == 200 else 0)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_at_the_limit_reaches_the_upstream_complete(
    fakes, gateways, expect, chunked: bool
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, max_body_bytes=LIMIT, routes=_routes())
    data = _chunks(LIMIT) if chunked else b"y" * LIMIT
    response = await client.post("/v1/products/upload", data=data)
    payload = await expect.echo(response)
    assert payload["body_length"] == LIMIT
    assert payload["body_sha256"] == hashlib.sha256(b"y" * LIMIT).hexdigest()


# -- connection failures --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_upstream_refusing_connections_is_a_502_bad_gateway(
    fakes, gateways, expect, method: str
) -> None:
    client = await gateways.start({"catalog": fakes.closed_url()}, routes=_routes())
    response = await client.request(method, "/v1/products", json={})
    await expect.problem(response, 502, "bad-gateway")


async def test_an_upstream_resetting_the_connection_is_a_502_and_a_post_is_never_retried(
    fakes, gateways, token_issuer: TokenIssuer, expect
) -> None:
    catalog = await fakes.resetting()
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    token = token_issuer.issue("writer", ("catalog:write",))
    response = await client.post(
        "/v1/products", json={"sku": "A"}, headers={"Authorization": f"Bearer {token}"}
    )
    await expect.problem(response, 502, "bad-gateway")
    assert catalog.hits == 1


@pytest.mark.parametrize("method", ["PATCH", "DELETE", "PUT"])
async def test_unsafe_methods_are_never_retried_after_a_reset(
    fakes, gateways, token_issuer: TokenIssuer, expect, method: str
) -> None:
    catalog = await fakes.resetting()
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    token = token_issuer.issue("writer", ("catalog:write",))
    response = await client.request(
        method, "/v1/products/p-1", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    await expect.problem(response, 502, "bad-gateway")
    assert catalog.hits == 1


async def test_a_get_is_retried_once_on_a_reset_and_then_a_502(fakes, gateways, expect) -> None:
    catalog = await fakes.resetting()
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    response = await client.get("/v1/products")
    await expect.problem(response, 502, "bad-gateway")
    assert catalog.hits == 2


async def test_a_get_retried_after_one_reset_gets_the_upstreams_answer(fakes, gateways) -> None:
    async def flaky(_reader, writer, hit: int) -> None:
        if hit == 1:
            fakes.reset(writer)
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    catalog = await fakes.raw(flaky)
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    response = await client.get("/v1/products")
    assert response.status == 200
    assert await response.read() == b"ok"
    assert catalog.hits == 2, catalog.heads


async def test_an_upstream_resetting_in_the_middle_of_a_small_answer_is_a_502_not_a_500(
    fakes, gateways, expect
) -> None:
    async def truncated(_reader, writer, _hit: int) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"items": ['
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        fakes.reset(writer)

    catalog = await fakes.raw(truncated)
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    response = await client.post("/v1/products", json={})
    await expect.problem(response, 502, "bad-gateway")


# -- timeouts -------------------------------------------------------------------------------


async def test_a_hanging_upstream_is_a_504_at_the_routes_timeout_and_is_not_retried(
    fakes, gateways, expect
) -> None:
    catalog = await fakes.hanging()
    client = await gateways.start({"catalog": catalog}, routes=_routes(timeout=0.3))
    started = time.perf_counter()
    response = await client.get("/v1/products")
    elapsed = time.perf_counter() - started
    await expect.problem(response, 504, "upstream-timeout")
    assert 0.3 <= elapsed < 1.5
    assert catalog.hits == 1


async def test_an_upstream_stalling_in_the_middle_of_a_small_answer_is_a_504(
    fakes, gateways, expect
) -> None:
    async def stalled(_reader, writer, _hit: int) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        await asyncio.sleep(3600)

    catalog = await fakes.raw(stalled)
    client = await gateways.start({"catalog": catalog}, routes=_routes(timeout=0.3))
    started = time.perf_counter()
    response = await client.post("/v1/products", json={})
    await expect.problem(response, 504, "upstream-timeout")
    assert time.perf_counter() - started < 1.5


# -- the breaker ----------------------------------------------------------------------------


async def test_the_breaker_opens_at_its_failure_rate_answers_503_fast_and_closes_when_back(
    fakes, gateways, expect
) -> None:
    mode = {"now": "fail"}

    async def upstream(_request: web.Request, _body: bytes) -> web.StreamResponse:
        if mode["now"] == "fail":
            return web.json_response({"status": "down"}, status=503)
        if mode["now"] == "hang":
            await asyncio.sleep(3600)
        return web.json_response({"status": "fine"})

    catalog = await fakes.upstream("catalog", upstream)
    config = UpstreamConfig(
        url=catalog.url,
        breaker_min_calls=3,
        breaker_reset_seconds=1.0,
        breaker_max_reset_seconds=1.0,
    )
    client = await gateways.start({"catalog": config}, routes=_routes(timeout=2.0))

    for _ in range(3):
        assert (await client.post("/v1/products", json={})).status == 503  # relayed
    assert catalog.hits == 3

    mode["now"] = "hang"  # reaching the upstream now would take the whole timeout
    for _ in range(3):
        started = time.perf_counter()
        response = await client.post("/v1/products", json={})
        elapsed = time.perf_counter() - started
        await expect.problem(response, 503, "upstream-unavailable")
        retry_after = response.headers["Retry-After"]
        assert retry_after.isdigit()
        assert int(retry_after) == 1  # the breaker resets after 1 s
        assert elapsed < 0.2  # the timeout is 2 s: nothing was sent
    assert catalog.hits == 3

    mode["now"] = "ok"
    await asyncio.sleep(1.1)  # past the reset time: one trial goes through
    trial = await client.post("/v1/products", json={})
    assert trial.status == 200
    for _ in range(3):
        assert (await client.post("/v1/products", json={})).status == 200
    assert catalog.hits == 7
    metrics = await expect.metrics(client)
    assert metrics.value("bazaar_circuit_breaker_state", dependency="catalog") == 0.0


async def test_a_failed_trial_opens_the_breaker_again(fakes, gateways, expect) -> None:
    client = await gateways.start(
        {
            "catalog": UpstreamConfig(
                url=fakes.closed_url(), breaker_min_calls=1, breaker_reset_seconds=1.0
            )
        },
        routes=_routes(),
    )
    assert (await client.post("/v1/products", json={})).status == 502
    await expect.problem(await client.post("/v1/products", json={}), 503, "upstream-unavailable")
    await asyncio.sleep(1.1)
    assert (await client.post("/v1/products", json={})).status == 502  # the trial
    await expect.problem(await client.post("/v1/products", json={}), 503, "upstream-unavailable")


# -- bounded concurrency ----------------------------------------------------------------------


async def test_a_saturated_upstream_answers_503_after_a_brief_wait(fakes, gateways, expect) -> None:
    release, arrived = asyncio.Event(), asyncio.Event()

    async def slow(_request: web.Request, _body: bytes) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response({"status": "done"})

    catalog = await fakes.upstream("catalog", slow)
    config = UpstreamConfig(url=catalog.url, max_concurrency=1)
    client = await gateways.start({"catalog": config}, routes=_routes())
    first = asyncio.create_task(client.get("/v1/products"))
    await asyncio.wait_for(arrived.wait(), 30)
    started = time.perf_counter()
    # Another read: one of the same product key would share the first's upstream request.
    second = await client.get("/v1/products?page=2")
    waited = time.perf_counter() - started
    await expect.problem(second, 503, "upstream-unavailable")
    assert second.headers["Retry-After"].isdigit()
    assert 0.5 <= waited < 3.0
    release.set()
    assert (await first).status == 200
    assert catalog.hits == 1


# -- the upstream's own errors ----------------------------------------------------------------


async def test_an_upstreams_own_500_problem_becomes_a_502_that_keeps_its_trace_id(
    fakes, gateways
) -> None:
    upstream_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    problem = {
        "type": "https://bazaar.example/problems/internal-error",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "KeyError: 'price' in /srv/catalog/service/products.py",
        "trace_id": upstream_trace,
    }

    async def failing(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.json_response(problem, status=500, content_type="application/problem+json")

    catalog = await fakes.upstream("catalog", failing)
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    response = await client.get("/v1/products", headers={"X-Request-ID": "relay-500"})
    body = await response.json(content_type=None)
    assert response.status == 502
    assert response.content_type == "application/problem+json"
    assert body["type"].endswith("/bad-gateway")
    assert body["status"] == 502
    assert body["trace_id"] == upstream_trace  # where the upstream logged the failure
    assert "/srv/catalog" not in body["detail"]
    assert response.headers["X-Request-ID"] == "relay-500"
    assert len(response.headers["X-Trace-Id"]) == 32
    assert catalog.hits == 1  # a 500 is an answer, not a connection error: no retry


async def test_an_upstreams_500_problem_arriving_in_pieces_still_gives_its_trace_id(
    fakes, gateways
) -> None:
    upstream_trace = "0af7651916cd43dd8448eb211c80319c"
    body = json.dumps({"status": 500, "title": "Oops", "trace_id": upstream_trace}).encode()

    async def in_pieces(_reader, writer, _hit: int) -> None:  # type: ignore[no-untyped-def]
        writer.write(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/problem+json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10])
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(body[10:])
        await writer.drain()

    catalog = await fakes.raw(in_pieces)
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    response = await client.get("/v1/products")
    assert response.status == 502
    assert (await response.json(content_type=None))["trace_id"] == upstream_trace


async def test_an_upstreams_500_without_a_usable_trace_id_names_the_gateways_trace(
    fakes, gateways, expect
) -> None:
    async def failing(_request: web.Request, _body: bytes) -> web.StreamResponse:
        problem = {"title": "Internal Server Error", "status": 500, "trace_id": "<script>"}
        return web.json_response(problem, status=500, content_type="application/problem+json")

    catalog = await fakes.upstream("catalog", failing)
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    body = await expect.problem(await client.get("/v1/products"), 502, "bad-gateway")
    assert body["trace_id"] != "<script>"


@pytest.mark.parametrize("content_type", ["text/plain", "text/html", "application/json"])
async def test_an_upstreams_stack_trace_is_never_passed_through(
    fakes, gateways, expect, content_type: str
) -> None:
    async def crashing(_request: web.Request, _body: bytes) -> web.StreamResponse:
        body = TRACEBACK
        if content_type == "application/json":
            body = '{"detail": ' + repr(TRACEBACK).replace("'", '"') + "}"
        return web.Response(status=500, text=body, content_type=content_type)

    catalog = await fakes.upstream("catalog", crashing)
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    response = await client.get("/v1/products")
    text = await response.text()
    await expect.problem(response, 502, "bad-gateway")  # never a 500 through the gateway
    assert "Traceback" not in text
    assert "ZeroDivisionError" not in text
    assert "/srv/catalog" not in text


async def test_an_upstream_answering_500_to_everything_opens_its_breaker(
    fakes, gateways, expect
) -> None:
    async def failing(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.json_response(
            {"status": 500}, status=500, content_type="application/problem+json"
        )

    catalog = await fakes.upstream("catalog", failing)
    config = UpstreamConfig(url=catalog.url, breaker_min_calls=3, breaker_reset_seconds=5.0)
    client = await gateways.start({"catalog": config}, routes=_routes())
    for _ in range(3):
        await expect.problem(await client.get("/v1/products"), 502, "bad-gateway")
    await expect.problem(await client.get("/v1/products"), 503, "upstream-unavailable")
    assert catalog.hits == 3


@pytest.mark.parametrize("nesting", [b"[" * 16_000, b'{"a":' * 3_200], ids=["arrays", "objects"])
async def test_a_500_problem_nested_too_deep_to_parse_is_a_plain_502_and_logs_no_error(
    fakes, gateways, expect, caplog, nesting: bytes
) -> None:
    async def deep(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500, body=nesting, content_type="application/problem+json")

    catalog = await fakes.upstream("catalog", deep)
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    with caplog.at_level(logging.ERROR, logger="bazaar.gateway"):
        body = await expect.problem(await client.get("/v1/products"), 502, "bad-gateway")
    assert body["detail"] == "The catalog service failed (500)."
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


# -- a refused body is neither asked for nor read ------------------------------------------------


async def _raw_exchange(client, head: bytes, *, then: bytes = b"", wait: float = 3.0):  # type: ignore[no-untyped-def]
    """Send `head`; send `then` once a 100 Continue arrives; return what came back and
    whether the gateway closed the connection within `wait`."""
    url = client.make_url("")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    received, closed = b"", False
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(wait):
            while True:
                data = await reader.read(65536)
                if not data:
                    closed = True
                    break
                received += data
                if then and b"100 Continue" in received:
                    writer.write(then)
                    then = b""
    except TimeoutError:
        pass
    finally:
        writer.close()
    return received, closed


async def test_a_413_closes_the_connection_instead_of_reading_the_rest_of_the_body(
    fakes, gateways
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, max_body_bytes=LIMIT, routes=_routes())
    url = client.make_url("")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"POST /v1/products HTTP/1.1\r\nHost: g\r\nContent-Length: 50000000\r\n\r\n")
    sent = 0
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=3)
        assert head.startswith(b"HTTP/1.1 413"), head
        async with asyncio.timeout(5):  # keep sending: the gateway must stop taking it
            while sent < 50_000_000:
                writer.write(b"y" * 65536)
                await writer.drain()
                sent += 65536
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    assert sent < 8 * 1024 * 1024, sent  # socket buffers, not the whole body
    assert catalog.hits == 0


async def test_expect_100_continue_over_the_limit_is_answered_413_without_a_100(
    fakes, gateways
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, max_body_bytes=LIMIT, routes=_routes())
    received, closed = await _raw_exchange(
        client,
        b"POST /v1/products HTTP/1.1\r\nHost: g\r\nContent-Length: 5000000\r\n"
        b"Expect: 100-continue\r\n\r\n",
    )
    assert received.startswith(b"HTTP/1.1 413"), received[:200]
    assert b"100 Continue" not in received
    assert closed
    assert catalog.hits == 0


async def test_expect_100_continue_without_a_token_is_answered_401_without_a_100(
    fakes, gateways
) -> None:
    orders = await fakes.upstream("orders")
    client = await gateways.start({"orders": orders})
    received, _closed = await _raw_exchange(
        client,
        b"POST /v1/orders HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        wait=1.5,
    )
    assert received.startswith(b"HTTP/1.1 401"), received[:200]
    assert b"100 Continue" not in received
    assert orders.hits == 0


async def test_expect_100_continue_gets_its_100_and_is_not_forwarded_upstream(
    fakes, gateways
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    received, _closed = await _raw_exchange(
        client,
        b"POST /v1/products HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n",
        then=b"hello",
    )
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), received[:200]
    assert catalog.seen[0].body == b"hello"
    assert "Expect" not in catalog.seen[0].headers
