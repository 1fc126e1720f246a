"""What a client does with its own upload never counts against an upstream (API.md, "Limits
and failures"): an aborted body gets nothing, a stalled one a 408, and neither reaches the
upstream, opens its breaker or fails another client's request."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pydantic import ValidationError

from bazaar.gateway import body as body_module
from bazaar.gateway.body import STALLED_AFTER_SECONDS
from bazaar.gateway.config import DEFAULT_ROUTES, RouteConfig, UpstreamConfig

#: Enough to open the eager breaker below several times over.
CLIENTS = 8
#: Whatever counted a client's abort or stall as an upstream failure would open this.
EAGER_BREAKER = {"breaker_min_calls": 3, "breaker_failure_rate": 0.5}
#: Old gateways streamed bodies upstream with the route's timeout; keep it short here.
QUICK_SIGNUP = RouteConfig(
    prefix="/v1/users", upstream="auth", methods=("POST",), auth="public", timeout=1.0
)


def _address(client) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    url = client.make_url("")
    return url.host, url.port


async def _partial_upload(
    client,  # type: ignore[no-untyped-def]
    path: str = "/v1/users",
    *,
    chunked: bool = False,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection and send a request head and the start of its body, no more."""
    host, port = _address(client)
    reader, writer = await asyncio.open_connection(host, port)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 1000"
    start = b'{"email": "'
    first = (b"%x\r\n%s\r\n" % (len(start), start)) if chunked else start
    writer.write(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Type: application/json\r\n" + framing + b"\r\n\r\n" + first
    )
    await writer.drain()
    return reader, writer


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a client killed mid-upload would."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _answer(
    reader: asyncio.StreamReader, *, closing: bool = True
) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body of a raw answer, and (`closing`) whether the gateway closed
    afterwards."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    if not closing:
        return status, headers, body, False
    closed = await asyncio.wait_for(reader.read(1), timeout=2) == b""
    return status, headers, body, closed


async def _service(fakes):  # type: ignore[no-untyped-def]
    """A fake auth that reads the body itself, as the real one does before answering; it
    counts a request as soon as its head arrives."""

    async def reading(request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.json_response({"length": len(await request.read())})

    auth = await fakes.upstream("auth", reading)
    auth.buffer_body = False
    return auth


async def _others_still_served(client, auth) -> None:  # type: ignore[no-untyped-def]
    """Another client's login and the JWKS reach the upstream as usual."""
    before = auth.hits
    login = await client.post(
        "/v1/auth/token", data={"grant_type": "password", "username": "u@x.io", "password": "p"}
    )
    assert login.status == 200, await login.text()
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.status == 200, await jwks.text()
    assert auth.hits == before + 2


async def test_aborted_uploads_never_reach_the_upstream_nor_open_its_breaker(
    fakes, served, expect
) -> None:
    auth = await _service(fakes)
    config = UpstreamConfig(url=auth.url, **EAGER_BREAKER)
    client = await served({"auth": config}, routes=(QUICK_SIGNUP, *DEFAULT_ROUTES))
    for _ in range(CLIENTS):
        _reader, writer = await _partial_upload(client)
        await asyncio.sleep(0.1)  # long enough for a streaming proxy to be forwarding
        _abort(writer)
    await asyncio.sleep(1.2)  # past the route's timeout
    await _others_still_served(client, auth)
    assert auth.hits == 2  # those two only: nothing of an unfinished body went upstream
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_upstream_errors_total", upstream="auth") == 0
    assert metrics.value("bazaar_circuit_breaker_state", dependency="auth") == 0


async def test_malformed_bodies_are_answered_400_and_never_open_the_breaker(
    fakes, served, expect
) -> None:
    auth = await _service(fakes)
    config = UpstreamConfig(url=auth.url, **EAGER_BREAKER)
    client = await served({"auth": config}, routes=(QUICK_SIGNUP, *DEFAULT_ROUTES))
    answers = []
    for _ in range(CLIENTS):
        reader, writer = await _partial_upload(client, chunked=True)
        writer.write(b"ZZ\r\n")  # not a chunk size: the body cannot be framed
        await writer.drain()
        answers.append(await asyncio.wait_for(_answer(reader), timeout=10))
        writer.close()
    for status, headers, body, _closed in answers:
        assert status == 400, body
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["type"].endswith("/bad-request")
        assert b"ZZ" not in body  # the input is not echoed
    await _others_still_served(client, auth)
    assert auth.hits == 2  # only the other client's two requests reached the upstream
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_upstream_errors_total", upstream="auth") == 0
    assert metrics.value("bazaar_circuit_breaker_state", dependency="auth") == 0


async def test_stalled_uploads_are_answered_408_and_never_open_the_breaker(
    fakes, served, expect
) -> None:
    auth = await _service(fakes)
    config = UpstreamConfig(url=auth.url, body_timeout_seconds=0.5, **EAGER_BREAKER)
    client = await served({"auth": config}, routes=(QUICK_SIGNUP, *DEFAULT_ROUTES))
    uploads = [await _partial_upload(client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    answers = await asyncio.wait_for(
        asyncio.gather(*(_answer(reader) for reader, _ in uploads)), timeout=10
    )
    elapsed = time.perf_counter() - started
    for writer in (w for _, w in uploads):
        writer.close()
    for status, headers, body, closed in answers:
        assert status == 408, body
        assert headers["content-type"] == "application/problem+json"
        problem = json.loads(body)
        assert problem["type"].endswith("/request-timeout")
        assert problem["status"] == 408
        assert problem["trace_id"] == headers["x-trace-id"]
        assert closed  # the rest of the body is not waited for
    assert elapsed < 3.0
    await _others_still_served(client, auth)
    assert auth.hits == 2
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_upstream_errors_total", upstream="auth") == 0
    assert metrics.value("bazaar_circuit_breaker_state", dependency="auth") == 0


async def test_a_stalled_chunked_body_is_answered_408_within_the_configured_time(
    fakes, served
) -> None:
    auth = await fakes.upstream("auth")
    config = UpstreamConfig(url=auth.url, body_timeout_seconds=0.5)
    client = await served({"auth": config})
    reader, writer = await _partial_upload(client, "/v1/auth/token", chunked=True)
    started = time.perf_counter()
    try:
        status, _headers, body, closed = await asyncio.wait_for(_answer(reader), timeout=10)
    finally:
        writer.close()
    assert status == 408, body
    assert json.loads(body)["type"].endswith("/request-timeout")
    assert 0.4 <= time.perf_counter() - started < 3.0
    assert closed
    assert auth.hits == 0


def test_no_setting_lets_a_stalled_body_wait_past_30_seconds() -> None:
    # API.md: a client that stops sending its body is answered 408 after at most 30 s.
    with pytest.raises(ValidationError):
        UpstreamConfig(url="http://upstream", body_idle_seconds=31)


def test_a_stale_or_misspelt_upstream_setting_fails_loudly() -> None:
    with pytest.raises(ValidationError, match="breaker_failures"):
        UpstreamConfig(url="http://upstream", breaker_failures=3)  # type: ignore[call-arg]


async def test_a_steady_slow_upload_goes_through_and_a_stalled_one_is_cut_at_the_idle_time(
    fakes, served
) -> None:
    auth = await fakes.upstream("auth")
    config = UpstreamConfig(url=auth.url, body_idle_seconds=0.5, body_timeout_seconds=20)
    client = await served({"auth": config})

    async def steady() -> AsyncIterator[bytes]:
        for _ in range(8):  # 2.4 s in all, never 0.5 s without a byte
            yield b"a" * 100
            await asyncio.sleep(0.3)

    response = await client.post("/v1/users", data=steady(), headers={"Content-Length": "800"})
    assert response.status == 200, await response.text()
    assert auth.seen[0].body == b"a" * 800
    reader, writer = await _partial_upload(client)
    started = time.perf_counter()
    try:
        status, _headers, body, closed = await asyncio.wait_for(_answer(reader), timeout=10)
    finally:
        writer.close()
    assert status == 408, body
    assert 0.4 <= time.perf_counter() - started < 2.0
    assert closed
    assert auth.hits == 1


async def test_a_trickled_body_is_cut_at_the_overall_time(fakes, served) -> None:
    auth = await fakes.upstream("auth")
    config = UpstreamConfig(url=auth.url, body_idle_seconds=0.5, body_timeout_seconds=1.0)
    client = await served({"auth": config})
    reader, writer = await _partial_upload(client)
    started = time.perf_counter()
    answer = asyncio.ensure_future(_answer(reader))
    try:
        while not answer.done() and time.perf_counter() - started < 5:
            writer.write(b"x")  # a byte every 0.2 s: never idle, never done
            await asyncio.sleep(0.2)
        status, _headers, body, _closed = await asyncio.wait_for(answer, timeout=5)
    finally:
        writer.close()
    assert status == 408, body
    assert 0.9 <= time.perf_counter() - started < 2.5
    assert auth.hits == 0


async def _holding_upload(client, size: int):  # type: ignore[no-untyped-def]
    """An upload that declares 1000 bytes, sends `size` of them, and stalls."""
    reader, writer = await _partial_upload(client)  # sends the start of the body
    writer.write(b"x" * (size - len(b'{"email": "')))
    await writer.drain()
    return reader, writer


async def test_stalled_uploads_holding_the_whole_body_budget_never_fail_another_clients_post(
    fakes, served, expect
) -> None:
    auth = await fakes.upstream("auth")
    client = await served({"auth": auth.url}, body_budget_bytes=2000)
    # Two stalled uploads hold 1,800 of the 2,000 bytes; a third client's 1,000 do not fit.
    stalled = [await _holding_upload(client, 900) for _ in range(2)]
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    response = await client.post("/v1/users", data=b"z" * 1000)
    assert (await expect.echo(response))["body_length"] == 1000
    # It waited until the stalled uploads had sent nothing for a second, then took the room
    # of the one silent longest: that one is answered 408 and closed, the other still waits.
    assert time.perf_counter() - started < STALLED_AFTER_SECONDS + 1.5
    status, headers, body, closed = await asyncio.wait_for(_answer(stalled[0][0]), timeout=3)
    assert status == 408, body
    assert json.loads(body)["type"].endswith("/request-timeout")
    assert headers["content-type"] == "application/problem+json"
    assert closed
    with pytest.raises(TimeoutError):  # nothing (no 408) came for the other one
        await asyncio.wait_for(stalled[1][0].read(1), timeout=0.3)
    for _, writer in stalled:
        writer.close()
    assert auth.hits == 1


async def test_a_steady_slow_upload_is_never_cut_to_make_room_for_stalled_ones(
    fakes, served, expect
) -> None:
    auth = await fakes.upstream("auth")
    client = await served({"auth": auth.url}, body_budget_bytes=1800)
    host, port = _address(client)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/users HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )

    async def steadily() -> None:  # 100 bytes every 0.2 s: never silent, 2 s in all
        for _ in range(10):
            writer.write(b"s" * 100)
            await writer.drain()
            await asyncio.sleep(0.2)

    sending = asyncio.create_task(steadily())
    await asyncio.sleep(1.2)  # the steady upload is older than the stall time now
    # Stalled uploads arrive after it and fill the budget (600 + 3 x 400 = 1,800 bytes).
    stalled = [await _holding_upload(client, 400) for _ in range(3)]
    try:
        await asyncio.wait_for(sending, timeout=10)
        status, _headers, body, _closed = await asyncio.wait_for(
            _answer(reader, closing=False), timeout=5
        )
    finally:
        writer.close()
        for _, stalled_writer in stalled:
            stalled_writer.close()
    assert status == 200, body
    assert json.loads(body)["body_length"] == 1000
    assert auth.hits == 1


async def test_stalled_uploads_declaring_large_bodies_hold_only_what_they_sent(
    fakes, served, expect
) -> None:
    auth = await fakes.upstream("auth")
    client = await served({"auth": auth.url}, body_budget_bytes=1500)
    # Each declares Content-Length 1000 and sends a few bytes: nothing like 1,500 is held.
    stalled = [await _partial_upload(client) for _ in range(CLIENTS)]
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    response = await client.post("/v1/users", data=b"z" * 1000)
    assert (await expect.echo(response))["body_length"] == 1000
    assert time.perf_counter() - started < STALLED_AFTER_SECONDS  # no wait, nobody cut
    for _, writer in stalled:
        writer.close()


async def test_a_budget_full_of_bodies_still_arriving_answers_503_and_recovers(
    fakes, served, expect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Uploads that stalled are cut for room after a second: here they never count as
    # stalled, so the budget is as full as a real overload leaves it.
    monkeypatch.setattr(body_module, "STALLED_AFTER_SECONDS", 60.0)
    monkeypatch.setattr(body_module, "ROOM_WAIT_SECONDS", 0.3)
    auth = await fakes.upstream("auth")
    client = await served({"auth": auth.url}, body_budget_bytes=1500)
    holding = await _holding_upload(client, 900)
    await asyncio.sleep(0.1)
    reader, writer = await _holding_upload(client, 900)  # 900 more do not fit
    try:
        status, headers, body, closed = await asyncio.wait_for(_answer(reader), timeout=3)
    finally:
        writer.close()
    assert status == 503, body
    assert json.loads(body)["type"].endswith("/service-unavailable")
    assert headers["retry-after"] == "1"
    assert closed
    _abort(holding[1])  # its bytes go back to the budget
    await asyncio.sleep(0.2)
    response = await client.post("/v1/users", data=b"z" * 1000)
    assert (await expect.echo(response))["body_length"] == 1000
    assert auth.hits == 1


async def test_a_chunked_body_is_not_read_before_the_request_is_authenticated(
    fakes, served
) -> None:
    orders = await fakes.upstream("orders")
    client = await served({"orders": orders})
    reader, writer = await _partial_upload(client, "/v1/orders", chunked=True)
    try:  # the body never ends: a gateway reading it first would answer 408 much later
        status, _headers, body, _closed = await asyncio.wait_for(_answer(reader), timeout=1.5)
    finally:
        writer.close()
    assert status == 401, body
    assert orders.hits == 0
