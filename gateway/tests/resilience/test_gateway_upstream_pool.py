"""Pooled upstream connections: none idles longer than an upstream keeps it open, and a POST
with an Idempotency-Key, on a route whose upstream honours it, is sent again once when it
provably never reached the upstream (no connection made, or a pooled one found closed
before any byte of the answer); other unsafe requests never are."""

from __future__ import annotations

import asyncio

import pytest

from bazaar.gateway.config import DEFAULT_ROUTES, RouteConfig, UpstreamConfig
from bazaar.shared.testing.tokens import TokenIssuer

ROUTES = (
    RouteConfig(
        prefix="/v1/products", upstream="catalog", auth="public", timeout=5.0, idempotent_post=True
    ),
    *DEFAULT_ROUTES,
)
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
#: uvicorn's default keep-alive: the services close a connection idle this long.
UPSTREAM_KEEP_ALIVE = 5.0


class StaleAfterFirst:
    """Answers the first request on a connection, then closes that connection when the next
    request arrives on it (as uvicorn does when its keep-alive ends just then)."""

    def __init__(self) -> None:
        self.connections: dict[int, int] = {}

    async def __call__(self, _reader, writer, _hit: int) -> None:  # type: ignore[no-untyped-def]
        served = self.connections.get(id(writer), 0)
        self.connections[id(writer)] = served + 1
        if served == 0:
            writer.write(OK)
            await writer.drain()
        else:
            writer.close()


async def test_a_post_after_the_upstreams_keep_alive_ran_out_is_served_on_defaults(
    fakes, gateways
) -> None:
    # The upstream forgets a connection idle for its keep-alive (uvicorn: 5 s) and closes
    # it when the next request arrives on it; a pool keeping it longer would send an
    # unrepeatable POST into it and answer 502.
    last_used: dict[int, float] = {}

    async def keep_alive(_reader, writer, _hit: int) -> None:  # type: ignore[no-untyped-def]
        now = asyncio.get_running_loop().time()
        if now - last_used.get(id(writer), now) >= UPSTREAM_KEEP_ALIVE:
            writer.close()
            return
        last_used[id(writer)] = now
        writer.write(OK)
        await writer.drain()

    catalog = await fakes.raw(keep_alive)
    client = await gateways.start({"catalog": catalog.url}, routes=ROUTES)
    assert (await client.post("/v1/products", json={})).status == 200
    await asyncio.sleep(UPSTREAM_KEEP_ALIVE + 0.3)
    response = await client.post("/v1/products", json={})
    assert response.status == 200, await response.text()
    assert catalog.hits == 2


async def test_a_connection_idle_past_the_pool_idle_time_is_not_reused(fakes, gateways) -> None:
    connections: set[int] = set()

    async def respond(_reader, writer, _hit: int) -> None:  # type: ignore[no-untyped-def]
        connections.add(id(writer))
        writer.write(OK)
        await writer.drain()

    catalog = await fakes.raw(respond)
    config = UpstreamConfig(url=catalog.url, pool_idle_seconds=0.3)
    client = await gateways.start({"catalog": config}, routes=ROUTES)
    assert (await client.get("/v1/products")).status == 200
    assert (await client.get("/v1/products")).status == 200
    assert len(connections) == 1  # kept alive while fresh
    await asyncio.sleep(1.5)  # (the pool's cleanup runs about once a second)
    assert (await client.get("/v1/products")).status == 200
    assert len(connections) == 2


async def test_a_post_with_an_idempotency_key_is_sent_again_once_on_a_stale_connection(
    fakes, gateways
) -> None:
    upstream = StaleAfterFirst()
    catalog = await fakes.raw(upstream)
    client = await gateways.start({"catalog": catalog}, routes=ROUTES)
    assert (await client.post("/v1/products", json={})).status == 200  # pools a connection
    response = await client.post(
        "/v1/products", json={"sku": "A"}, headers={"Idempotency-Key": "k-stale-1"}
    )
    assert response.status == 200
    assert await response.read() == b"ok"
    assert catalog.hits == 3  # the stale connection, then a fresh one
    assert [b"idempotency-key: k-stale-1" in h.lower() for h in catalog.heads[1:]] == [True] * 2
    assert catalog.bodies[1] == catalog.bodies[2] == b'{"sku": "A"}'


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
async def test_an_unsafe_request_without_an_idempotency_key_is_never_sent_again(
    fakes, gateways, expect, method: str
) -> None:
    upstream = StaleAfterFirst()
    catalog = await fakes.raw(upstream)
    client = await gateways.start({"catalog": catalog}, routes=ROUTES)
    assert (await client.post("/v1/products", json={})).status == 200  # pools a connection
    response = await client.request(method, "/v1/products", json={"sku": "A"})
    await expect.problem(response, 502, "bad-gateway")
    assert catalog.hits == 2


async def test_a_keyed_post_whose_fresh_connection_fails_after_sending_is_never_sent_again(
    fakes, gateways, expect
) -> None:
    # The upstream received it (and may have done the work) before the connection broke.
    catalog = await fakes.resetting()
    client = await gateways.start({"catalog": catalog}, routes=ROUTES)
    response = await client.post("/v1/products", json={}, headers={"Idempotency-Key": "k-2"})
    await expect.problem(response, 502, "bad-gateway")
    assert catalog.hits == 1


async def test_a_keyed_order_whose_upstream_dies_before_answering_is_never_sent_again(
    fakes, gateways, expect, token_issuer: TokenIssuer
) -> None:
    async def dies(_reader, writer, _hit: int) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.2)  # the order is placed...
        writer.close()  # ...and the process dies before answering

    orders = await fakes.raw(dies)
    client = await gateways.start({"orders": orders})
    token = token_issuer.issue("customer-1", ("orders:write",))
    response = await client.post(
        "/v1/orders",
        json={"lines": []},
        headers={"Idempotency-Key": "k-3", "Authorization": f"Bearer {token}"},
    )
    await expect.problem(response, 502, "bad-gateway")
    assert orders.hits == 1


async def test_a_keyed_post_refused_a_connection_is_tried_once_more(
    fakes, gateways, expect
) -> None:
    config = UpstreamConfig(url=fakes.closed_url(), breaker_min_calls=100)
    client = await gateways.start({"catalog": config}, routes=ROUTES)
    response = await client.post("/v1/products", json={}, headers={"Idempotency-Key": "k-4"})
    await expect.problem(response, 502, "bad-gateway")
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_upstream_errors_total", upstream="catalog", kind="retried") == 1
    assert metrics.value("gateway_upstream_errors_total", upstream="catalog", kind="connect") == 1


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/v1/auth/token", {"grant_type": "refresh_token", "refresh_token": "rt-1"}),
        ("/v1/users", {"email": "a@b.io"}),
    ],
    ids=["refresh-grant", "sign-up"],
)
async def test_a_keyed_post_to_a_route_that_ignores_the_key_is_never_sent_again(
    fakes, gateways, expect, path: str, form: dict[str, str]
) -> None:
    # auth ignores Idempotency-Key: a refresh grant sent twice revokes the token family,
    # a sign-up sent twice answers 409 for the user it created.
    upstream = StaleAfterFirst()
    auth = await fakes.raw(upstream)
    client = await gateways.start({"auth": auth}, rate_limiting=False)
    assert (await client.post(path, data=form)).status == 200  # pools a connection
    response = await client.post(path, data=form, headers={"Idempotency-Key": "k-5"})
    await expect.problem(response, 502, "bad-gateway")
    assert auth.hits == 2
