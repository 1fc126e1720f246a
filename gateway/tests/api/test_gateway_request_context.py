"""Request id, tracing and security headers on every answer (API.md "Gateway behaviour")."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web

from bazaar.gateway.config import PolicyConfig
from bazaar.shared.testing.tokens import TokenIssuer

VISIBLE_ASCII_ID = re.compile(r"[\x21-\x7e]{1,128}")
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.fixture
async def gateway(fakes, gateways):
    """A gateway with an echo catalog; auth and orders refuse connections."""
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, max_body_bytes=4096)
    return client, catalog


async def _raw_exchange(url: str, head: bytes) -> tuple[int, dict[str, str]]:
    """Send a raw request head; return the status and the (lower-cased) response headers."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        await writer.wait_closed()
    lines = answer.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


# -- request id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    ["a", "req-42", "x" * 128, "!#$%&'*+-.^_`|~0aZ", "0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00"],
)
async def test_a_valid_incoming_request_id_is_echoed_and_forwarded(
    gateway, expect, request_id: str
) -> None:
    client, _ = gateway
    response = await client.get("/v1/products", headers={"X-Request-ID": request_id})
    payload = await expect.echo(response)
    assert response.headers["X-Request-ID"] == request_id
    assert expect.headers(payload).getall("X-Request-ID") == [request_id]


@pytest.mark.parametrize(
    "raw_value",
    [b"", b"x" * 129, b"has space", b"caf\xc3\xa9", b"tab\there"],
    ids=["empty", "129-chars", "space", "non-ascii", "tab"],
)
async def test_an_invalid_incoming_request_id_is_replaced_by_a_valid_one(
    gateway, raw_value: bytes
) -> None:
    client, catalog = gateway
    head = (
        b"GET /v1/products HTTP/1.1\r\nHost: gateway\r\nX-Request-ID: "
        + raw_value
        + b"\r\nConnection: close\r\n\r\n"
    )
    status, headers = await _raw_exchange(str(client.make_url("")), head)
    assert status == 200
    echoed = headers["x-request-id"]
    assert echoed.encode() != raw_value.strip()
    assert VISIBLE_ASCII_ID.fullmatch(echoed)
    assert catalog.seen[0].headers.getall("X-Request-ID") == [echoed]


async def test_a_missing_request_id_is_generated_fresh_for_each_request_and_forwarded(
    gateway, expect
) -> None:
    client, catalog = gateway
    first = await client.get("/v1/products")
    second = await client.get("/v1/products")
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    for response in (first, second):
        await expect.echo(response)
    assert all(VISIBLE_ASCII_ID.fullmatch(i) for i in ids)
    assert ids[0] != ids[1]
    assert [seen.headers["X-Request-ID"] for seen in catalog.seen] == ids


@pytest.mark.parametrize(
    ("method", "path", "status", "slug"),
    [
        ("GET", "/v1/nowhere", 404, "not-found"),
        ("GET", "/v1/orders", 401, "unauthorized"),
        ("POST", "/v1/auth/token", 502, "bad-gateway"),
    ],
)
async def test_error_answers_echo_the_request_id_too(
    gateway, expect, method: str, path: str, status: int, slug: str
) -> None:
    client, _ = gateway
    response = await client.request(method, path, headers={"X-Request-ID": "err-check-1"})
    await expect.problem(response, status, slug)
    assert response.headers["X-Request-ID"] == "err-check-1"


# -- tracing --------------------------------------------------------------------------------


async def test_an_incoming_traceparent_is_continued_with_a_new_parent_span(gateway, expect) -> None:
    client, catalog = gateway
    incoming = f"00-{TRACE_ID}-{PARENT_ID}-01"
    response = await client.get("/v1/products", headers={"traceparent": incoming})
    await expect.echo(response)
    assert response.headers["X-Trace-Id"] == TRACE_ID
    forwarded = catalog.seen[0].headers.getall("traceparent")
    assert len(forwarded) == 1
    match = TRACEPARENT.fullmatch(forwarded[0])
    assert match, forwarded
    assert match[1] == TRACE_ID
    assert match[2] != PARENT_ID
    assert match[2] != "0" * 16


async def test_each_request_continuing_a_trace_gets_its_own_gateway_span(gateway) -> None:
    client, catalog = gateway
    incoming = f"00-{TRACE_ID}-{PARENT_ID}-01"
    for _ in range(2):
        response = await client.get("/v1/products", headers={"traceparent": incoming})
        assert response.status == 200
    spans = [TRACEPARENT.fullmatch(s.headers["traceparent"])[2] for s in catalog.seen]  # type: ignore[index]
    assert spans[0] != spans[1]


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
        f"00_{TRACE_ID}_{PARENT_ID}_01",
    ],
    ids=[
        "garbage",
        "empty",
        "zero-trace",
        "zero-parent",
        "short-trace",
        "no-flags",
        "version-ff",
        "non-hex",
        "underscores",
    ],
)
async def test_a_malformed_traceparent_starts_a_new_trace(
    gateway, expect, traceparent: str
) -> None:
    client, catalog = gateway
    response = await client.get("/v1/products", headers={"traceparent": traceparent})
    await expect.echo(response)
    trace_id = response.headers["X-Trace-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert trace_id not in {TRACE_ID, "0" * 32}
    forwarded = TRACEPARENT.fullmatch(catalog.seen[0].headers["traceparent"])
    assert forwarded, catalog.seen[0].headers["traceparent"]
    assert forwarded[1] == trace_id


async def test_without_a_traceparent_each_request_starts_its_own_trace(gateway, expect) -> None:
    client, catalog = gateway
    ids = []
    for _ in range(2):
        response = await client.get("/v1/products")
        await expect.echo(response)
        ids.append(response.headers["X-Trace-Id"])
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert ids[0] != ids[1]
    forwarded = [TRACEPARENT.fullmatch(s.headers["traceparent"]) for s in catalog.seen]
    assert [m[1] for m in forwarded if m] == ids


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "slug"),
    [
        ("GET", "/v1/nowhere", {}, 404, "not-found"),
        ("GET", "/v1/orders", {}, 401, "unauthorized"),
        ("GET", "/v1/orders", {"Authorization": "Bearer not.a.token"}, 401, "unauthorized"),
        ("POST", "/v1/auth/token", {}, 502, "bad-gateway"),
        ("POST", "/v1/products", {"Content-Length": "5000"}, 413, "payload-too-large"),
    ],
)
async def test_problem_answers_carry_the_continued_trace_id_in_header_and_body(
    gateway, expect, method: str, path: str, headers: dict[str, str], status: int, slug: str
) -> None:
    client, _ = gateway
    incoming = f"00-{TRACE_ID}-{PARENT_ID}-01"
    data = b"x" * int(headers.pop("Content-Length", "0")) or None
    response = await client.request(
        method, path, headers={**headers, "traceparent": incoming}, data=data
    )
    body = await expect.problem(response, status, slug)
    assert response.headers["X-Trace-Id"] == TRACE_ID == body["trace_id"]


async def test_a_429_carries_the_trace_id_in_header_and_body(fakes, gateways, expect) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start(
        {"catalog": catalog},
        rate_limits={
            "user": PolicyConfig(quota=100, window=3600),
            "anonymous": PolicyConfig(quota=1, window=3600),
            "token": PolicyConfig(quota=100, window=3600),
        },
    )
    first = await client.get("/v1/products")
    assert first.status == 200
    incoming = f"00-{TRACE_ID}-{PARENT_ID}-01"
    response = await client.get("/v1/products", headers={"traceparent": incoming})
    body = await expect.problem(response, 429, "rate-limited")
    assert response.headers["X-Trace-Id"] == TRACE_ID == body["trace_id"]


async def test_an_upstreams_own_trace_header_is_replaced_by_the_gateways(fakes, gateways) -> None:
    async def lying(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(text="ok", headers={"X-Trace-Id": "f" * 32, "X-Request-ID": "up"})

    catalog = await fakes.upstream("catalog", lying)
    client = await gateways.start({"catalog": catalog})
    incoming = f"00-{TRACE_ID}-{PARENT_ID}-01"
    response = await client.get(
        "/v1/products", headers={"traceparent": incoming, "X-Request-ID": "mine"}
    )
    assert response.status == 200
    assert response.headers.getall("X-Trace-Id") == [TRACE_ID]
    assert response.headers.getall("X-Request-ID") == ["mine"]


# -- security headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/products", 200),
        ("GET", "/v1/nowhere", 404),
        ("GET", "/v1/orders", 401),
        ("POST", "/v1/auth/token", 502),
    ],
)
async def test_security_headers_are_on_proxied_and_problem_answers(
    gateway, method: str, path: str, status: int
) -> None:
    client, _ = gateway
    response = await client.request(method, path)
    assert response.status == status
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


async def test_a_token_for_a_public_route_is_still_forwarded_unchanged(
    gateway, token_issuer: TokenIssuer, expect
) -> None:
    client, _ = gateway
    token = token_issuer.issue("reader")
    response = await client.get("/v1/products", headers={"Authorization": f"Bearer {token}"})
    payload = await expect.echo(response)
    assert expect.headers(payload).getall("Authorization") == [f"Bearer {token}"]


# -- cookies ----------------------------------------------------------------------------


async def test_an_upstreams_cookie_reaches_its_client_and_is_never_sent_for_another(
    fakes, gateways
) -> None:
    async def sets_cookie(request: web.Request, _body: bytes) -> web.StreamResponse:
        answer = web.json_response({"cookie": request.headers.get("Cookie")})
        answer.set_cookie("session", "alice-secret", path="/")
        return answer

    catalog = await fakes.upstream("catalog", sets_cookie)
    # By name, not by address: aiohttp's cookie jar keeps no cookies of bare IP addresses.
    by_name = catalog.url.replace("127.0.0.1", "localhost")
    client = await gateways.start({"catalog": by_name})
    first = await client.get("/v1/products/1")
    assert "alice-secret" in first.headers["Set-Cookie"]
    client.session.cookie_jar.clear()  # the next request is another client's, cookie-less
    await client.get("/v1/products/2")
    assert [seen.headers.get("Cookie") for seen in catalog.seen] == [None, None]
