"""Routing (API.md "Routing"): each prefix reaches its service; internal and unknown paths 404."""

from __future__ import annotations

import asyncio
import posixpath

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from bazaar.shared.testing.tokens import TokenIssuer

Client = TestClient[web.Request, web.Application]
ADMIN_SCOPES = ("users:admin", "catalog:write", "orders:read", "orders:write", "orders:admin")


@pytest.fixture
async def routed(fakes, gateways):
    """A gateway in front of three echo upstreams named after the services."""
    upstreams = {name: await fakes.upstream(name) for name in ("auth", "catalog", "orders")}
    client = await gateways.start(upstreams)
    return client, upstreams


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("method", "path", "service"),
    [
        ("POST", "/v1/auth/token", "auth"),
        ("POST", "/v1/auth/revoke", "auth"),
        ("GET", "/.well-known/jwks.json", "auth"),
        ("GET", "/.well-known/openid-configuration", "auth"),
        ("POST", "/v1/users", "auth"),
        ("GET", "/v1/users/me", "auth"),
        ("GET", "/v1/users", "auth"),
        ("PATCH", "/v1/users/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00", "auth"),
        ("GET", "/v1/products", "catalog"),
        ("GET", "/v1/products/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00", "catalog"),
        ("POST", "/v1/products", "catalog"),
        ("PATCH", "/v1/products/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00", "catalog"),
        ("DELETE", "/v1/products/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00", "catalog"),
        ("GET", "/v1/orders", "orders"),
        ("POST", "/v1/orders", "orders"),
        ("POST", "/v1/orders/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00/cancel", "orders"),
    ],
)
async def test_each_prefix_of_the_route_table_reaches_its_service_with_path_and_query_intact(
    routed, token_issuer: TokenIssuer, expect, method: str, path: str, service: str
) -> None:
    client, upstreams = routed
    token = token_issuer.issue("routing-admin", ADMIN_SCOPES)
    target = f"{path}?limit=2&q=caf%C3%A9&x=a%2Bb%26c"
    response = await client.request(
        method, URL(target, encoded=True), headers=_bearer(token), data=b"{}"
    )
    payload = await expect.echo(response)
    assert payload["upstream"] == service
    assert payload["method"] == method
    assert payload["path_qs"] == target
    assert [u.hits for u in upstreams.values()] == [
        1 if name == service else 0 for name in upstreams
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/reservations"),
        ("GET", "/v1/reservations"),
        ("DELETE", "/v1/reservations/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00"),
        ("GET", "/v1/reservations/x"),
        ("POST", "/v1/reservations/"),
    ],
)
async def test_internal_reservations_are_answered_404_by_the_gateway_even_with_a_service_token(
    routed, token_issuer: TokenIssuer, expect, method: str, path: str
) -> None:
    client, upstreams = routed
    token = token_issuer.issue("orders", ("catalog:reserve",), client_id="orders")
    response = await client.request(
        method, path, headers={**_bearer(token), "Idempotency-Key": "k-1"}, json={}
    )
    await expect.problem(response, 404, "not-found")
    assert sum(u.hits for u in upstreams.values()) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v2/products",
        "/v1/productsx",
        "/v1/ordersx",
        "/v1/usersx",
        "/v1/auth",
        "/.well-known",
        "/v1/reservationsx",
        "/v1/%72eservations",
        "/docs-nope",
    ],
)
async def test_unknown_paths_are_a_404_problem_and_reach_no_upstream(
    routed, expect, path: str
) -> None:
    client, upstreams = routed
    response = await client.get(path)
    await expect.problem(response, 404, "not-found")
    assert sum(u.hits for u in upstreams.values()) == 0


async def _raw_request(url: str, head: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(65536)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("method", "target", "scopes"),
    [
        ("DELETE", "/v1/products/../reservations", ("catalog:write",)),
        (
            "DELETE",
            "/v1/products/../reservations/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00",
            ("catalog:write",),
        ),
        ("DELETE", "/v1/products/./../reservations", ("catalog:write",)),
        ("DELETE", "/v1/products/%2e%2e/reservations", ("catalog:write",)),
        ("GET", "/v1/products/../reservations/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00", None),
    ],
)
async def test_dot_segments_cannot_smuggle_a_request_to_the_internal_reservations(
    routed, token_issuer: TokenIssuer, method: str, target: str, scopes: tuple[str, ...] | None
) -> None:
    client, upstreams = routed
    authorization = ""
    if scopes is not None:
        authorization = f"Authorization: Bearer {token_issuer.issue('writer', scopes)}\r\n"
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: gateway\r\n{authorization}"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    answer = await _raw_request(str(client.make_url("")).rstrip("/"), head)
    status_line = answer.split(b"\r\n", 1)[0]
    reached = [seen.path_qs for seen in upstreams["catalog"].seen]
    # Either the gateway refuses the path, or it forwards it as the path it routed; never
    # a path that the upstream resolves to /v1/reservations.
    assert not any("reservations" in path for path in reached), (status_line, reached)


@pytest.mark.parametrize(
    "target",
    ["/v1/users/me/../../users", "/v1/users/me/%2e%2e", "/v1/users/me/../../users/x"],
)
async def test_dot_segments_cannot_escape_a_routes_scope_check(
    routed, token_issuer: TokenIssuer, target: str
) -> None:
    client, upstreams = routed
    token = token_issuer.issue("customer", ("catalog:read",))  # no users:admin
    head = (
        f"GET {target} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    )
    answer = await _raw_request(str(client.make_url("")).rstrip("/"), head)
    status_line = answer.split(b"\r\n", 1)[0]
    reached = [posixpath.normpath(seen.path_qs) for seen in upstreams["auth"].seen]
    # /v1/users/me needs any token; /v1/users and /v1/users/{id} need users:admin.
    assert all(path.startswith("/v1/users/me") for path in reached), (status_line, reached)


async def test_post_users_is_public(routed, expect) -> None:
    client, upstreams = routed
    response = await client.post("/v1/users", json={"email": "a@b.test"})
    payload = await expect.echo(response)
    assert payload["upstream"] == "auth"
    assert upstreams["auth"].hits == 1


async def test_users_me_needs_a_token(routed, expect) -> None:
    client, upstreams = routed
    response = await client.get("/v1/users/me")
    await expect.problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert upstreams["auth"].hits == 0


async def test_users_me_serves_any_valid_token_without_a_particular_scope(
    routed, token_issuer: TokenIssuer, expect
) -> None:
    client, _ = routed
    response = await client.get("/v1/users/me", headers=_bearer(token_issuer.issue("u", ())))
    assert (await expect.echo(response))["upstream"] == "auth"


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/users", "users:admin"),
        ("PATCH", "/v1/users/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00", "users:admin"),
        ("POST", "/v1/products", "catalog:write"),
        ("PATCH", "/v1/products/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00", "catalog:write"),
        ("DELETE", "/v1/products/0d8e5c3a-2b6f-4f59-9e0e-1f4a3c2b1a00", "catalog:write"),
    ],
)
async def test_a_valid_token_without_the_routes_scope_is_a_403_with_insufficient_scope(
    routed, token_issuer: TokenIssuer, expect, method: str, path: str, scope: str
) -> None:
    client, upstreams = routed
    token = token_issuer.issue("customer", ("catalog:read", "orders:read", "orders:write"))
    response = await client.request(method, path, headers=_bearer(token), json={})
    await expect.problem(response, 403, "forbidden")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_scope"' in challenge
    assert scope in challenge
    assert sum(u.hits for u in upstreams.values()) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/users"), ("POST", "/v1/products"), ("GET", "/v1/orders")],
)
async def test_protected_routes_without_a_token_are_a_401_with_a_bare_bearer_challenge(
    routed, expect, method: str, path: str
) -> None:
    client, upstreams = routed
    response = await client.request(method, path, json={})
    await expect.problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert sum(u.hits for u in upstreams.values()) == 0


async def test_users_list_serves_a_users_admin_token(
    routed, token_issuer: TokenIssuer, expect
) -> None:
    client, _ = routed
    token = token_issuer.issue("admin", ("users:admin",))
    response = await client.get("/v1/users", headers=_bearer(token))
    assert (await expect.echo(response))["upstream"] == "auth"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_reading_products_is_public(routed, method: str) -> None:
    client, upstreams = routed
    response = await client.request(method, "/v1/products")
    assert response.status == 200
    assert upstreams["catalog"].hits == 1


async def test_creating_a_product_serves_a_catalog_write_token(
    routed, token_issuer: TokenIssuer, expect
) -> None:
    client, _ = routed
    token = token_issuer.issue("writer", ("catalog:write",))
    response = await client.post("/v1/products", headers=_bearer(token), json={"sku": "A"})
    payload = await expect.echo(response)
    assert payload["upstream"] == "catalog"
    assert payload["body"] == '{"sku": "A"}'


async def test_clients_see_the_gateways_server_name_never_a_services(fakes, gateways) -> None:
    async def names_itself(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response({}, headers={"Server": "granian/2.8 (internal)"})

    catalog = await fakes.upstream("catalog", names_itself)
    client = await gateways.start({"catalog": catalog})
    response = await client.get("/v1/products")
    assert response.status == 200
    assert response.headers.getall("Server") == ["bazaar-gateway"]
