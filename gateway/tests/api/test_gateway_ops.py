"""The gateway's own endpoints (/healthz, /readyz, /metrics, /version), deprecated routes,
and CORS from configuration."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import platform
import re

import pytest
from aiohttp import web

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


@pytest.mark.parametrize(
    ("method", "path", "served_by"),
    [
        ("GET", "/healthz", "gateway"),
        ("GET", "/docs/static/init.js", "gateway"),
        ("POST", "/healthz", "pipeline"),  # no own route for POST: the catch-all's
        ("GET", "/docs/static", "pipeline"),
        ("GET", "/healthzx", "pipeline"),
        ("GET", "/v1/products/1", "upstream"),
    ],
)
async def test_own_routes_and_the_pipeline_split_paths_as_the_router_does(
    ready_gateway, method: str, path: str, served_by: str
) -> None:
    # Served by the EdgeRunner, paths of no own route skip aiohttp's router: the outcome
    # must be the router's (its catch-all route is the pipeline).
    client, _ = ready_gateway
    response = await client.request(method, path)
    if served_by == "gateway":
        assert response.status == 200
    elif served_by == "pipeline":
        assert response.status == 404
        assert response.content_type == "application/problem+json"
    else:
        assert response.status == 200
        assert (await response.json())["upstream"] == "catalog"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers.get("X-Trace-Id", ""))


async def test_version_names_the_service_its_installed_version_and_environment(
    fakes, gateways, expect
) -> None:
    # The version is the installed package's, whatever a setting says.
    client = await gateways.start(version="9.9.9")
    response = await client.get("/version")
    assert response.status == 200
    installed = importlib.metadata.version("bazaar-gateway")
    assert await response.json() == {
        "service": "gateway",
        "version": installed,
        "environment": "test",
    }
    metrics = await expect.metrics(client)
    assert metrics.labels("bazaar_build_info") == [
        {"service": "gateway", "version": installed, "python_version": platform.python_version()}
    ]
    assert metrics.value("bazaar_build_info") == 1


#: What the gateway's /metrics must show (names as scraped).
SPEC_NAMES = {
    "http_server_request_duration_seconds_bucket",
    "http_server_request_duration_seconds_count",
    "http_server_request_duration_seconds_sum",
    "http_server_active_requests",
    "bazaar_build_info",
    "process_start_time_seconds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "python_info",
    "python_gc_objects_collected_total",
    "bazaar_circuit_breaker_state",
    "bazaar_circuit_breaker_opened_total",
    "gateway_upstream_duration_seconds_count",
    "gateway_rate_limit_decisions_total",
    "gateway_rate_limit_fallbacks_total",
}
#: Names issue 14 retired.
OLD_NAMES = {
    "gateway_requests_total",
    "gateway_request_duration_seconds_count",
    "gateway_breaker_state",
    "http_server_requests_total",
    "http_server_requests_in_flight",
    "bazaar_service_info",
}


async def test_metrics_carry_the_shared_names_and_labels_and_none_of_the_old(
    ready_gateway, expect
) -> None:
    client, _ = ready_gateway
    assert (await client.get("/v1/products/42")).status == 200
    assert (await client.request("PROPFIND", "/v1/orders")).status == 401
    metrics = await expect.metrics(client)
    assert SPEC_NAMES <= metrics.names(), SPEC_NAMES - metrics.names()
    assert not OLD_NAMES & metrics.names()
    series = metrics.labels("http_server_request_duration_seconds_count")
    assert {frozenset(labels) for labels in series} == {
        frozenset({"http_request_method", "http_route", "http_response_status_code"})
    }
    # The route is the public path template, without the method; unknown methods are _OTHER.
    assert {(s["http_request_method"], s["http_route"]) for s in series} == {
        ("GET", "/v1/products"),
        ("_OTHER", "/v1/orders"),
    }
    breakers = metrics.labels("bazaar_circuit_breaker_state")
    assert sorted(labels["dependency"] for labels in breakers) == ["auth", "catalog", "orders"]


async def test_metrics_time_requests_by_method_route_and_status_and_upstream_latency(
    ready_gateway, token_issuer: TokenIssuer, expect
) -> None:
    client, _ = ready_gateway
    for _ in range(2):
        assert (await client.get("/v1/products")).status == 200
    assert (await client.get("/v1/orders")).status == 401
    assert (await client.get("/v1/nowhere")).status == 404
    metrics = await expect.metrics(client)
    count = "http_server_request_duration_seconds_count"

    def requests(method: str, route: str, status: str) -> float:
        return metrics.value(
            count, http_request_method=method, http_route=route, http_response_status_code=status
        )

    assert requests("GET", "/v1/products", "200") == 2
    assert requests("GET", "/v1/orders", "401") == 1
    assert requests("GET", "unmatched", "404") == 1
    assert metrics.value(count) == 4
    assert metrics.value("gateway_upstream_duration_seconds_count", upstream="catalog") == 2


async def test_active_requests_count_the_requests_being_served(fakes, gateways, expect) -> None:
    both_arrived, release = asyncio.Event(), asyncio.Event()

    async def held(_request: web.Request, _body: bytes) -> web.StreamResponse:
        if catalog.hits == 2:
            both_arrived.set()
        await release.wait()
        return web.json_response({"ok": True})

    catalog = await fakes.upstream("catalog", held)
    client = await gateways.start({"catalog": catalog})
    # Two distinct reads: concurrent reads of one product key share one upstream request.
    pending = [asyncio.create_task(client.get(f"/v1/products?n={n}")) for n in range(2)]
    await asyncio.wait_for(both_arrived.wait(), 5)
    during = await expect.metrics(client)
    release.set()
    assert [(await answer).status for answer in pending] == [200, 200]
    after = await expect.metrics(client)
    assert during.value("http_server_active_requests") == 2
    assert after.value("http_server_active_requests") == 0


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
        {"catalog": UpstreamConfig(url=fakes.closed_url(), breaker_min_calls=2)}
    )
    closed = await expect.metrics(client)
    statuses = []
    while 503 not in statuses and len(statuses) < 5:
        statuses.append((await client.get("/v1/products")).status)
    assert statuses[0] == 502
    assert statuses[-1] == 503
    metrics = await expect.metrics(client)
    assert metrics.value("bazaar_circuit_breaker_state", dependency="catalog") == 2.0  # open
    assert metrics.value("bazaar_circuit_breaker_opened_total", dependency="catalog") == 1
    assert closed.value("bazaar_circuit_breaker_state", dependency="catalog") == 0.0
    assert closed.value("bazaar_circuit_breaker_opened_total", dependency="catalog") == 0


async def test_the_breaker_state_goes_closed_open_half_open_closed_as_0_2_1_0(
    fakes, gateways, expect
) -> None:
    async def fails_once(_request: web.Request, _body: bytes) -> web.StreamResponse:
        status = 500 if catalog.hits == 1 else 200
        return web.json_response({}, status=status)

    catalog = await fakes.upstream("catalog", fails_once)
    config = UpstreamConfig(
        url=catalog.url,
        breaker_min_calls=1,
        breaker_reset_seconds=0.3,
        breaker_max_reset_seconds=0.3,
    )
    client = await gateways.start({"catalog": config})

    async def breaker() -> tuple[float, float]:
        metrics = await expect.metrics(client)
        return (
            metrics.value("bazaar_circuit_breaker_state", dependency="catalog"),
            metrics.value("bazaar_circuit_breaker_opened_total", dependency="catalog"),
        )

    seen = [await breaker()]
    assert (await client.get("/v1/products")).status == 502  # opens it
    seen.append(await breaker())
    await asyncio.sleep(0.35)  # past the pause: the next call is its trial
    seen.append(await breaker())
    assert (await client.get("/v1/products")).status == 200  # the trial closes it
    seen.append(await breaker())
    assert seen == [(0, 0), (2, 1), (1, 1), (0, 1)]


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


async def test_deprecated_route_use_is_counted_per_oauth_client_and_the_user_only_logged(
    fakes, gateways, token_issuer: TokenIssuer, expect, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, routes=_deprecated_routes())
    web_user = token_issuer.issue("deprecated-user", client_id="bazaar-web")
    app_user = token_issuer.issue("other-user", client_id="bazaar-mobile")
    callers = [
        {"Authorization": f"Bearer {web_user}"},
        {"Authorization": f"Bearer {web_user}"},
        {"Authorization": f"Bearer {app_user}"},
        {},
        {"Authorization": "Bearer not-a-valid-token"},  # a public route serves it anonymously
    ]
    with caplog.at_level(logging.INFO, logger="bazaar.gateway"):
        for headers in callers:
            assert (await client.get("/v1/products", headers=headers)).status == 200
    metrics = await expect.metrics(client)
    name = "gateway_deprecated_route_use_total"
    counted = {
        labels["client_id"]: metrics.value(name, **labels) for labels in metrics.labels(name)
    }
    assert counted == {"bazaar-web": 2, "bazaar-mobile": 1, "anonymous": 2}
    assert {frozenset(labels.items()) for labels in metrics.labels(name)} == {
        frozenset({("http_route", "/v1/products"), ("client_id", c)}) for c in counted
    }
    # Who used it is in the log, one line per use, never in a label.
    used = [r for r in caplog.records if getattr(r, "event", None) == "deprecated-route-used"]
    assert [(r.__dict__["client_id"], r.__dict__["user"]) for r in used] == [
        ("bazaar-web", "deprecated-user"),
        ("bazaar-web", "deprecated-user"),
        ("bazaar-mobile", "other-user"),
        ("anonymous", None),
        ("anonymous", None),
    ]
    assert {r.__dict__["http_route"] for r in used} == {"/v1/products"}


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
