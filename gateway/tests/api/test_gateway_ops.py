"""The gateway's own endpoints (/healthz, /readyz, /metrics, /version), deprecated routes,
and CORS from configuration."""

from __future__ import annotations

import re

import pytest

from bazaar.gateway.config import DEFAULT_ROUTES, PolicyConfig, RouteConfig, UpstreamConfig
from bazaar.shared.testing.tokens import TokenIssuer

SUNSET = "Sat, 01 Aug 2026 00:00:00 GMT"


@pytest.fixture
async def ready_gateway(fakes, gateways):
    """A gateway whose three upstreams are echo fakes answering /readyz 200."""
    upstreams = {name: await fakes.upstream(name) for name in ("auth", "catalog", "orders")}
    return await gateways.start(upstreams), upstreams


async def test_healthz_answers_200_without_asking_the_upstreams(fakes, gateways) -> None:
    client = await gateways.start()  # every upstream refuses connections
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_readyz_is_200_when_every_upstream_is_ready(ready_gateway) -> None:
    client, _ = ready_gateway
    response = await client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["checks"] == {"auth": "ok", "catalog": "ok", "orders": "ok"}


@pytest.mark.parametrize("how", ["unready", "refusing"])
async def test_readyz_is_a_503_problem_naming_the_failing_upstream(
    fakes, gateways, how: str
) -> None:
    auth, catalog = await fakes.upstream("auth"), await fakes.upstream("catalog")
    orders: object
    if how == "unready":
        orders = await fakes.upstream("orders")
        orders.ready_status = 503  # type: ignore[attr-defined]
    else:
        orders = fakes.closed_url()
    client = await gateways.start({"auth": auth, "catalog": catalog, "orders": orders})
    response = await client.get("/readyz")
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == 503
    assert body["checks"] == {"auth": "ok", "catalog": "ok", "orders": "failing"}
    assert "orders" in body["detail"]
    assert "auth" not in body["detail"]


async def test_readyz_problem_carries_the_trace_id_like_every_problem(fakes, gateways) -> None:
    client = await gateways.start()  # every upstream refuses connections
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"]), body
    assert response.headers.get("X-Trace-Id") == body["trace_id"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/version"])
async def test_the_gateways_own_answers_carry_request_id_trace_id_and_security_headers(
    ready_gateway, path: str
) -> None:
    client, _ = ready_gateway
    response = await client.get(path, headers={"X-Request-ID": "ops-1"})
    assert response.status == 200
    assert response.headers.get("X-Request-ID") == "ops-1"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers.get("X-Trace-Id", ""))
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


async def test_version_names_the_service_its_version_and_environment(ready_gateway) -> None:
    client, _ = ready_gateway
    response = await client.get("/version")
    assert response.status == 200
    assert await response.json() == {
        "service": "gateway",
        "version": "0.1.0",
        "environment": "test",
    }


async def test_metrics_count_requests_by_route_and_status_and_upstream_latency(
    ready_gateway, token_issuer: TokenIssuer, expect
) -> None:
    client, _ = ready_gateway
    for _ in range(2):
        assert (await client.get("/v1/products")).status == 200
    assert (await client.get("/v1/orders")).status == 401
    assert (await client.get("/v1/nowhere")).status == 404
    metrics = await expect.metrics(client)
    products = "GET,HEAD /v1/products"
    assert metrics.value("gateway_requests_total", route=products, status="200") == 2
    assert metrics.value("gateway_requests_total", route="* /v1/orders", status="401") == 1
    assert metrics.value("gateway_requests_total", route="unmatched", status="404") == 1
    assert metrics.value("gateway_upstream_duration_seconds_count", upstream="catalog") == 2
    assert metrics.value("gateway_request_duration_seconds_count", route=products) == 2


async def test_metrics_count_rate_limit_decisions_by_policy_and_outcome(
    fakes, gateways, expect
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start(
        {"catalog": catalog},
        rate_limits={
            "user": PolicyConfig(quota=100, window=3600),
            "anonymous": PolicyConfig(quota=2, window=3600),
            "token": PolicyConfig(quota=100, window=3600),
        },
    )
    statuses = [(await client.get("/v1/products")).status for _ in range(3)]
    assert statuses.count(429) >= 1
    metrics = await expect.metrics(client)
    allowed = metrics.value(
        "gateway_rate_limit_decisions_total", policy="anonymous", decision="allowed"
    )
    denied = metrics.value(
        "gateway_rate_limit_decisions_total", policy="anonymous", decision="denied"
    )
    assert (allowed, denied) == (statuses.count(200), statuses.count(429))


async def test_metrics_show_the_breaker_state_per_upstream(fakes, gateways, expect) -> None:
    client = await gateways.start(
        {"catalog": UpstreamConfig(url=fakes.closed_url(), breaker_failures=2)}
    )
    closed = await expect.metrics(client)
    statuses = []
    while 503 not in statuses and len(statuses) < 5:
        statuses.append((await client.get("/v1/products")).status)
    assert statuses[0] == 502
    assert statuses[-1] == 503
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_breaker_state", upstream="catalog") == 1.0
    assert closed.value("gateway_breaker_state", upstream="catalog") == 0.0


def _deprecated_routes() -> tuple[RouteConfig, ...]:
    old = RouteConfig(
        prefix="/v1/products",
        upstream="catalog",
        methods=("GET", "HEAD"),
        auth="public",
        deprecated_sunset=SUNSET,
    )
    return (old, *DEFAULT_ROUTES)


async def test_a_deprecated_route_answers_deprecation_and_sunset_headers(fakes, gateways) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, routes=_deprecated_routes())
    response = await client.get("/v1/products")
    assert response.status == 200
    deprecation = response.headers.get("Deprecation", "")
    # RFC 9745 says "@<epoch seconds>"; the earlier draft said "true". Either way: present.
    assert re.fullmatch(r"true|@-?\d+", deprecation), deprecation
    assert response.headers.get("Sunset") == SUNSET
    other = await client.get("/v1/orders")
    assert "Deprecation" not in other.headers
    assert "Sunset" not in other.headers


async def test_deprecated_route_use_is_counted_per_client_in_metrics(
    fakes, gateways, token_issuer: TokenIssuer, expect
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, routes=_deprecated_routes())
    token = token_issuer.issue("deprecated-user")
    for _ in range(2):
        response = await client.get("/v1/products", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200
    assert (await client.get("/v1/products")).status == 200
    metrics = await expect.metrics(client)
    name = "gateway_deprecated_route_use_total"
    assert metrics.value(name, client="deprecated-user") == 2
    assert metrics.value(name, client="127.0.0.1") == 1
    assert {labels["client"] for labels in metrics.labels(name)} == {
        "deprecated-user",
        "127.0.0.1",
    }


# -- CORS (issue 4: "CORS from configuration") -----------------------------------------------

ORIGIN = "https://shop.bazaar.test"


async def test_a_configured_origin_gets_cors_headers_and_others_do_not(fakes, gateways) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, cors_origins=(ORIGIN,))
    allowed = await client.get("/v1/products", headers={"Origin": ORIGIN})
    assert allowed.status == 200
    assert allowed.headers.get("Access-Control-Allow-Origin") == ORIGIN
    stranger = await client.get("/v1/products", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in stranger.headers


async def test_a_cors_preflight_from_a_configured_origin_is_answered_by_the_gateway(
    fakes, gateways
) -> None:
    orders = await fakes.upstream("orders")
    client = await gateways.start({"orders": orders}, cors_origins=(ORIGIN,))
    response = await client.options(
        "/v1/orders",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert response.status in {200, 204}
    assert response.headers.get("Access-Control-Allow-Origin") == ORIGIN
    assert "POST" in response.headers.get("Access-Control-Allow-Methods", "")
    allowed_headers = response.headers.get("Access-Control-Allow-Headers", "").lower()
    assert "authorization" in allowed_headers
    assert orders.hits == 0
