"""The breaker (DESIGN.md "Breakers and overload"): a failure rate over a window with a
minimum number of calls, so a burst's few errors open nothing and an outage does; every
half-open trial ends, however it ends; recovery follows the upstream within about 2 s."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp import web
from pydantic import ValidationError

from bazaar.gateway import proxy
from bazaar.gateway.app import UPSTREAMS
from bazaar.gateway.config import DEFAULT_ROUTES, RouteConfig, UpstreamConfig
from bazaar.shared.testing.server import free_port

ROUTES = (
    RouteConfig(prefix="/v1/products", upstream="catalog", auth="public", timeout=5.0),
    *DEFAULT_ROUTES,
)
#: Opens on the first failure.
TWITCHY = {"breaker_min_calls": 1}
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


def _state(client) -> float:  # type: ignore[no-untyped-def]
    return float(client.app[UPSTREAMS]["catalog"].breaker.state.value)


async def _eventually_ok(client, within: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until a request is answered 200 (polling every 50 ms), at most `within`."""
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < within:
        if (await client.post("/v1/products", json={})).status == 200:
            return elapsed
        await asyncio.sleep(0.05)
    pytest.fail(f"no 200 within {within} s")


# -- every half-open trial ends ----------------------------------------------------------------


async def test_a_trial_shed_for_want_of_a_slot_lets_the_next_request_try(fakes, gateways) -> None:
    release = asyncio.Event()

    async def behaviour(request: web.Request, _body: bytes) -> web.StreamResponse:
        if catalog.hits > 1:
            return web.json_response({"ok": True})
        # The first answer is a 503 (the breaker opens) streamed slowly: it keeps the only
        # slot while the breaker turns half-open and the trial waits for that slot.
        failing = web.StreamResponse(
            status=503, headers={"Content-Type": "application/problem+json"}
        )
        failing.enable_chunked_encoding()
        await failing.prepare(request)
        await failing.write(b'{"status": 503, "padding": "' + b"x" * 70_000)
        await release.wait()
        await failing.write(b'"}')
        await failing.write_eof()
        return failing

    catalog = await fakes.upstream("catalog", behaviour)
    config = UpstreamConfig(
        url=catalog.url,
        max_concurrency=1,
        breaker_reset_seconds=0.3,
        breaker_max_reset_seconds=0.3,
        **TWITCHY,
    )
    client = await gateways.start({"catalog": config}, routes=ROUTES)
    first = await client.post("/v1/products", json={})
    assert first.status == 503  # its body is still streaming: the slot stays taken
    await asyncio.sleep(0.4)  # half-open now
    trial = await client.post("/v1/products", json={})  # waits 1 s for the slot, is shed
    assert trial.status == 503
    release.set()
    await first.read()
    assert await _eventually_ok(client, within=2.0) < 1.0
    assert _state(client) == 0


async def test_a_trial_whose_client_aborts_its_upload_lets_the_next_request_try(
    fakes, served
) -> None:
    async def behaviour(_request: web.Request, _body: bytes) -> web.StreamResponse:
        status = 503 if catalog.hits == 1 else 200
        return web.json_response({"hit": catalog.hits}, status=status)

    catalog = await fakes.upstream("catalog", behaviour)
    config = UpstreamConfig(
        url=catalog.url, breaker_reset_seconds=0.3, breaker_max_reset_seconds=2.0, **TWITCHY
    )
    client = await served({"catalog": config}, routes=ROUTES)
    assert (await client.post("/v1/products", json={})).status == 503  # opens
    await asyncio.sleep(0.4)  # half-open: the next request is the trial
    url = client.make_url("")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"POST /v1/products HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()  # the trial's client goes away mid-body
    await asyncio.sleep(0.1)
    # The upstream did nothing wrong: no reopened breaker, the next request is the trial.
    assert (await client.post("/v1/products", json={})).status == 200
    assert _state(client) == 0
    del reader


async def test_a_trial_answered_with_garbage_is_a_502_and_the_breaker_leaves_half_open(
    fakes, gateways, expect
) -> None:
    async def respond(_reader, writer, hit: int) -> None:  # type: ignore[no-untyped-def]
        if hit == 1:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        elif hit == 2:
            writer.write(b"HTTP/1.1 abc Garbage\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(OK)
        await writer.drain()

    catalog = await fakes.raw(respond)
    config = UpstreamConfig(
        url=catalog.url, breaker_reset_seconds=0.3, breaker_max_reset_seconds=0.3, **TWITCHY
    )
    client = await gateways.start({"catalog": config}, routes=ROUTES)
    await expect.problem(await client.post("/v1/products", json={}), 503, "upstream-unavailable")
    await asyncio.sleep(0.4)
    await expect.problem(await client.post("/v1/products", json={}), 502, "bad-gateway")
    assert _state(client) == 2  # open: the failed trial opened it again, for a while only
    assert await _eventually_ok(client, within=2.0) < 1.0
    assert catalog.hits == 3


async def test_an_unexpected_error_is_a_logged_502_problem_and_ends_the_trial(
    fakes, gateways, expect, monkeypatch, caplog
) -> None:
    async def behaviour(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.json_response({}, status=503 if catalog.hits == 1 else 200)

    catalog = await fakes.upstream("catalog", behaviour)
    config = UpstreamConfig(
        url=catalog.url, breaker_reset_seconds=0.3, breaker_max_reset_seconds=0.3, **TWITCHY
    )
    client = await gateways.start({"catalog": config}, routes=ROUTES)
    assert (await client.post("/v1/products", json={})).status == 503  # opens
    await asyncio.sleep(0.4)
    relay = proxy.relay

    async def broken_relay(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the gateway")  # what no test can provoke otherwise

    monkeypatch.setattr(proxy, "relay", broken_relay)
    with caplog.at_level(logging.ERROR, logger="bazaar.gateway"):
        response = await client.post("/v1/products", json={})
        await expect.problem(response, 502, "bad-gateway")
    assert any(r.exc_info and "a bug in the gateway" in str(r.exc_info[1]) for r in caplog.records)
    monkeypatch.setattr(proxy, "relay", relay)
    assert await _eventually_ok(client, within=2.0) < 1.0
    assert _state(client) == 0


# -- a rate over a window, not a few consecutive errors -----------------------------------------


async def test_a_burst_with_a_few_connection_errors_among_many_successes_opens_nothing(
    fakes, gateways, expect
) -> None:
    async def respond(_reader, writer, hit: int) -> None:  # type: ignore[no-untyped-def]
        if hit <= 5:
            fakes.reset(writer)  # the burst's first connections fail, all at once
            return
        await asyncio.sleep(0.05)
        writer.write(OK)
        await writer.drain()

    catalog = await fakes.raw(respond)
    client = await gateways.start({"catalog": catalog}, routes=ROUTES)
    statuses = await asyncio.gather(
        *(client.post("/v1/products", json={"n": n}) for n in range(200))
    )
    counts = {s: [r.status for r in statuses].count(s) for s in {r.status for r in statuses}}
    assert counts.get(503, 0) == 0, counts
    assert counts[502] <= 5, counts
    metrics = await expect.metrics(client)
    assert metrics.value("bazaar_circuit_breaker_state", dependency="catalog") == 0
    assert (await client.post("/v1/products", json={})).status == 200


async def test_an_outage_opens_the_breaker_after_the_minimum_number_of_calls(
    fakes, gateways, expect
) -> None:
    config = UpstreamConfig(url=fakes.closed_url())
    client = await gateways.start({"catalog": config}, routes=ROUTES)
    statuses = [
        (await client.post("/v1/products", json={})).status
        for _ in range(config.breaker_min_calls + 5)
    ]
    assert statuses[: config.breaker_min_calls] == [502] * config.breaker_min_calls
    assert set(statuses[config.breaker_min_calls :]) == {503}
    metrics = await expect.metrics(client)
    assert metrics.value("bazaar_circuit_breaker_state", dependency="catalog") == 2  # open


# -- recovery follows the upstream -------------------------------------------------------------


async def _serve(port: int) -> web.AppRunner:
    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_an_upstream_back_after_a_kill_is_used_again_within_two_seconds(
    gateways, expect
) -> None:
    port = free_port()
    runner = await _serve(port)
    config = UpstreamConfig(url=f"http://127.0.0.1:{port}", breaker_min_calls=5)
    client = await gateways.start({"catalog": config}, routes=ROUTES)
    try:
        assert (await client.post("/v1/products", json={})).status == 200
        await runner.cleanup()  # killed
        down_since = time.perf_counter()
        while time.perf_counter() - down_since < 4.0:  # clients keep trying meanwhile
            assert (await client.post("/v1/products", json={})).status in (502, 503)
            await asyncio.sleep(0.02)
        assert _state(client) in (1, 2)  # half-open or open
        runner = await _serve(port)  # back
        assert await _eventually_ok(client, within=5.0) <= 2.0
    finally:
        await runner.cleanup()
    metrics = await expect.metrics(client)
    # ~150 requests in 4 s down, yet only the first five and a trial now and then reached
    # for the dead upstream: recovery is fast without hammering it.
    attempts = metrics.value("gateway_upstream_errors_total", upstream="catalog")
    assert attempts <= 5 + 8, attempts


# -- the window itself -------------------------------------------------------------------------


def test_failures_older_than_the_window_do_not_count() -> None:
    from bazaar.gateway.breaker import CircuitBreaker, State

    now = [1000.0]
    breaker = CircuitBreaker(window_seconds=10, min_calls=4, failure_rate=0.5, clock=lambda: now[0])
    for _ in range(3):
        breaker.on_failure(breaker.before_call())
    now[0] += 11  # those three are out of the window now
    breaker.on_success(breaker.before_call())
    breaker.on_failure(breaker.before_call())
    assert breaker.state is State.CLOSED  # 1 failure of 2 calls: under the minimum
    for _ in range(2):
        breaker.on_failure(breaker.before_call())
    assert breaker.state is State.OPEN  # 3 of 4


def test_calls_are_forgotten_after_a_quiet_spell_longer_than_the_window() -> None:
    from bazaar.gateway.breaker import CircuitBreaker, State

    now = [1000.0]
    breaker = CircuitBreaker(window_seconds=10, min_calls=4, failure_rate=0.5, clock=lambda: now[0])
    for _ in range(3):
        breaker.on_failure(breaker.before_call())
        now[0] += 1
    now[0] += 25  # quiet for longer than the window: every bucket is stale
    for _ in range(3):
        breaker.on_success(breaker.before_call())
    breaker.on_failure(breaker.before_call())
    assert breaker.state is State.CLOSED  # 1 failure of 4, not 4 of 7


def test_a_breaker_window_longer_than_a_minute_is_refused() -> None:
    # A verdict must stay cheap and the window short enough to forget an outage.
    with pytest.raises(ValidationError):
        UpstreamConfig(url="http://upstream", breaker_window_seconds=3600)


async def test_a_trial_answered_500_opens_the_breaker_again(fakes, gateways, expect) -> None:
    async def failing(_request: web.Request, _body: bytes) -> web.StreamResponse:
        status = 200 if catalog.hits > 2 else 500
        return web.json_response({}, status=status, content_type="application/problem+json")

    catalog = await fakes.upstream("catalog", failing)
    config = UpstreamConfig(
        url=catalog.url, breaker_reset_seconds=0.3, breaker_max_reset_seconds=0.3, **TWITCHY
    )
    client = await gateways.start({"catalog": config}, routes=ROUTES)
    await expect.problem(await client.post("/v1/products", json={}), 502, "bad-gateway")
    await expect.problem(await client.post("/v1/products", json={}), 503, "upstream-unavailable")
    await asyncio.sleep(0.4)
    await expect.problem(await client.post("/v1/products", json={}), 502, "bad-gateway")  # trial
    assert _state(client) == 2  # opened again: a 500 is the upstream failing
    assert catalog.hits == 2


async def test_a_retry_that_succeeds_counts_no_connection_error(fakes, gateways, expect) -> None:
    async def flaky(_reader, writer, hit: int) -> None:  # type: ignore[no-untyped-def]
        if hit == 1:
            fakes.reset(writer)
            return
        writer.write(OK)
        await writer.drain()

    catalog = await fakes.raw(flaky)
    client = await gateways.start({"catalog": catalog}, routes=ROUTES)
    assert (await client.get("/v1/products")).status == 200
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_upstream_errors_total", upstream="catalog", kind="connect") == 0
    assert metrics.value("gateway_upstream_errors_total", upstream="catalog", kind="retried") == 1
