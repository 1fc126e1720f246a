"""Limits and upstream failures (API.md "Limits and failures"): 413, 502, 504, the breaker's
503, safe retries, bounded concurrency, and what an upstream's own 500 becomes."""

from __future__ import annotations

import asyncio
import hashlib
import io
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


async def test_the_breaker_opens_after_n_failures_answers_503_fast_and_closes_when_back(
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
    config = UpstreamConfig(url=catalog.url, breaker_failures=3, breaker_reset_seconds=1.0)
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
    assert metrics.value("gateway_breaker_state", upstream="catalog") == 0.0


async def test_a_failed_trial_opens_the_breaker_again(fakes, gateways, expect) -> None:
    client = await gateways.start(
        {
            "catalog": UpstreamConfig(
                url=fakes.closed_url(), breaker_failures=1, breaker_reset_seconds=1.0
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
    await arrived.wait()
    started = time.perf_counter()
    second = await client.get("/v1/products")
    waited = time.perf_counter() - started
    await expect.problem(second, 503, "upstream-unavailable")
    assert second.headers["Retry-After"].isdigit()
    assert 0.5 <= waited < 3.0
    release.set()
    assert (await first).status == 200
    assert catalog.hits == 1


# -- the upstream's own errors ----------------------------------------------------------------


async def test_an_upstreams_own_500_problem_is_relayed_with_the_gateways_ids(
    fakes, gateways
) -> None:
    problem = {
        "type": "https://bazaar.example/problems/internal-error",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "Something went wrong.",
        "trace_id": "0" * 32,
    }

    async def failing(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.json_response(problem, status=500, content_type="application/problem+json")

    catalog = await fakes.upstream("catalog", failing)
    client = await gateways.start({"catalog": catalog}, routes=_routes())
    response = await client.get("/v1/products", headers={"X-Request-ID": "relay-500"})
    assert response.status == 500
    assert response.content_type == "application/problem+json"
    assert (await response.json())["detail"] == problem["detail"]
    assert response.headers["X-Request-ID"] == "relay-500"
    assert len(response.headers["X-Trace-Id"]) == 32
    assert catalog.hits == 1  # a 500 is an answer, not a connection error: no retry


@pytest.mark.parametrize("content_type", ["text/plain", "text/html", "application/json"])
async def test_an_upstreams_stack_trace_is_never_passed_through(
    fakes, gateways, content_type: str
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
    assert response.status >= 500
    assert "Traceback" not in text
    assert "ZeroDivisionError" not in text
    assert "/srv/catalog" not in text
