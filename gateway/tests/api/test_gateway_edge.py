"""The HTTP edge (API.md "Limits and failures"): raw bytes over a socket to a running gateway.

A request the parser refuses → 400 problem `bad-request` that does not echo the input;
request headers over 32 KiB in all → 431 problem `request-header-fields-too-large`; neither
logs a traceback, a flood of them logs a throttled warning; no answer's `Server` header
names a version.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

MARKER = "zq-echo-marker-7f3a"
CAP = 32 * 1024


@dataclass
class RawAnswer:
    """An HTTP answer as bytes on the wire, parsed just enough."""

    status_line: str
    headers: dict[str, str]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(" ")[1])

    def problem(self) -> dict[str, Any]:
        assert self.headers["content-type"].startswith("application/problem+json"), self
        body: dict[str, Any] = json.loads(self.body)
        return body


async def exchange(port: int, request: bytes) -> RawAnswer:
    """Send `request` on a new connection; read one answer (the gateway may then close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        return RawAnswer(lines[0], headers, body)
    finally:
        writer.close()


def get(path: str = "/v1/products", headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A well-formed GET with these extra headers."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def fill(total: int, fixed: int) -> list[tuple[str, str]]:
    """Headers whose names and values add up to `total` bytes with `fixed` already used."""
    left, headers, i = total - fixed, [], 0
    while left > 0:
        name = f"X-Fill-{i:02d}"
        size = min(4000, left - len(name))
        headers.append((name, "f" * size))
        left -= len(name) + size
        i += 1
    return headers


def assert_no_version(answer: RawAnswer) -> None:
    server = answer.headers.get("server", "")
    assert not re.search(r"\d", server), server
    assert "aiohttp" not in server.lower() and "python" not in server.lower(), server


@pytest.fixture
async def gateway_port(fakes, gateways) -> int:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog})
    assert client.port is not None
    return client.port


BAD_REQUESTS = {
    "bad-method": f"G@T /{MARKER} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "bad-version": f"GET /{MARKER} HTTP/1.x\r\nHost: x\r\n\r\n".encode(),
    "binary": b"\x16\x03\x01\x00\xa5" + MARKER.encode() + b"\r\n\r\n",
    "bad-header": f"GET / HTTP/1.1\r\nHost: x\r\nX {MARKER}\r\n\r\n".encode(),
    "long-request-line": f"GET /{MARKER}{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
}


@pytest.mark.parametrize("kind", list(BAD_REQUESTS))
async def test_a_request_the_parser_refuses_is_a_400_problem_that_does_not_echo_it(
    gateway_port: int, kind: str
) -> None:
    answer = await exchange(gateway_port, BAD_REQUESTS[kind])
    assert re.fullmatch(r"HTTP/1\.[01] 400 Bad Request", answer.status_line), answer
    body = answer.problem()
    assert body["type"].endswith("/bad-request") and body["status"] == 400
    assert body["trace_id"] == answer.headers["x-trace-id"]
    assert MARKER.encode() not in answer.body
    assert MARKER not in json.dumps(answer.headers)
    assert_no_version(answer)


async def test_a_64_kib_header_is_a_431_problem_that_does_not_echo_it(gateway_port: int) -> None:
    request = get(headers=[("X-Big", MARKER + "b" * 64 * 1024)])
    answer = await exchange(gateway_port, request)
    assert re.fullmatch(r"HTTP/1\.[01] 431 Request Header Fields Too Large", answer.status_line)
    body = answer.problem()
    assert body["type"].endswith("/request-header-fields-too-large") and body["status"] == 431
    assert MARKER.encode() not in answer.body
    assert_no_version(answer)


async def test_headers_over_32_kib_in_all_are_a_431_problem(gateway_port: int) -> None:
    # Each line well under the cap; together just over it.
    answer = await exchange(gateway_port, get(headers=fill(CAP + 1, len("Host127.0.0.1"))))
    assert answer.status == 431, answer
    assert answer.problem()["type"].endswith("/request-header-fields-too-large")
    assert_no_version(answer)


async def test_a_request_with_headers_just_under_32_kib_in_all_is_served(
    gateway_port: int,
) -> None:
    headers = fill(CAP - 64, len("Host127.0.0.1"))
    answer = await exchange(gateway_port, get(headers=headers))
    assert answer.status == 200, answer
    assert len(json.loads(answer.body)["headers"]) >= len(headers)  # the echo saw them all


async def test_no_answer_names_a_server_version(gateway_port: int) -> None:
    for request in (get(), get("/healthz"), get("/v1/nowhere"), BAD_REQUESTS["bad-method"]):
        assert_no_version(await exchange(gateway_port, request))


async def test_a_flood_of_bad_requests_logs_one_throttled_warning_and_no_traceback(
    gateway_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    kinds = [*BAD_REQUESTS.values(), get(headers=[("X-Big", "b" * 64 * 1024)])]
    with caplog.at_level(logging.DEBUG):
        for i in range(100):
            answer = await exchange(gateway_port, kinds[i % len(kinds)])
            assert answer.status in (400, 431)
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert all(MARKER not in r.getMessage() for r in caplog.records)


async def test_more_than_128_header_fields_are_a_431_problem_naming_the_limit(
    gateway_port: int,
) -> None:
    answer = await exchange(gateway_port, get(headers=[(f"X-N-{i}", "v") for i in range(130)]))
    assert answer.status == 431, answer
    body = answer.problem()
    assert body["type"].endswith("/request-header-fields-too-large")
    assert "128 header fields" in body["detail"]


async def test_a_head_growing_past_the_cap_is_answered_431_before_the_rest_is_read(
    gateway_port: int,
) -> None:
    # 126 lines of 30,000 bytes (each under the per-line cap) would be ~3.8 MB buffered
    # before any total is taken; the gateway answers once the head passes ~41 KiB.
    reader, writer = await asyncio.open_connection("127.0.0.1", port=gateway_port)
    answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    sent = 0
    try:
        writer.write(b"GET /v1/products HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for i in range(126):
            if answer.done():
                break
            line = f"X-Fill-{i:03d}: ".encode() + b"f" * 30_000 + b"\r\n"
            writer.write(line)
            sent += len(line)
            await writer.drain()
            await asyncio.sleep(0.01)
        async with asyncio.timeout(5):
            head = await answer
    except ConnectionError:
        head = await asyncio.wait_for(answer, 5)
    finally:
        writer.close()
    assert re.match(rb"HTTP/1\.[01] 431 ", head), head
    assert b"application/problem+json" in head
    assert sent < 1024 * 1024, sent  # answered long before the 3.8 MB the head would be


async def test_a_connection_naming_an_end_to_end_header_is_a_400_problem(
    gateway_port: int,
) -> None:
    # It would be dropped as hop-by-hop: the upstream would not see what the gateway saw.
    for named in ("Authorization", "Content-Type", "host"):
        headers = [("Authorization", "Basic eDp5"), ("Connection", f"keep-alive, {named}")]
        answer = await exchange(gateway_port, get(headers=headers))
        assert answer.status == 400, answer
        assert answer.problem()["type"].endswith("/bad-request")
    served = await exchange(gateway_port, get(headers=[("Connection", "keep-alive, X-Hop")]))
    assert served.status == 200, served


async def test_a_connect_request_is_a_400_problem(gateway_port: int) -> None:
    answer = await exchange(gateway_port, b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n")
    assert answer.status == 400, answer
    assert answer.problem()["type"].endswith("/bad-request")
    assert_no_version(answer)


async def test_refusals_are_counted_by_status_in_metrics(fakes, gateways, expect) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog})
    assert client.port is not None
    for request in (BAD_REQUESTS["bad-method"], BAD_REQUESTS["binary"]):
        assert (await exchange(client.port, request)).status == 400
    assert (await exchange(client.port, get(headers=[("X-Big", "b" * CAP)]))).status == 431
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_edge_refused_total", status="400") == 2
    assert metrics.value("gateway_edge_refused_total", status="431") == 1


async def test_a_connection_without_a_complete_head_is_closed_after_the_keepalive_timeout(
    fakes, gateways
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, keepalive_timeout=1.0)
    assert client.port is not None
    started = asyncio.get_running_loop().time()
    silent = await asyncio.open_connection("127.0.0.1", client.port)
    partial = await asyncio.open_connection("127.0.0.1", client.port)
    partial[1].write(b"GET /v1/products HTTP/1.1\r\nHost: x\r\n")
    try:
        async with asyncio.timeout(10):
            assert await silent[0].read() == b""
            assert await partial[0].read() == b""
    finally:
        silent[1].close()
        partial[1].close()
    assert asyncio.get_running_loop().time() - started < 5
