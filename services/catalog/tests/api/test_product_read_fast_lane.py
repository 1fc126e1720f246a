"""GET /v1/products/{id} in the fast lane: the same answers as the FastAPI route, byte for byte.

Each request goes to the catalog as built (fast lane on) and to the same catalog built
without fast routes, over the same database; the lane's counters tell which path answered.
The plain reads (200, 304, either case of UUID) and the errors of the read itself (an
unknown product's 404, a database busy or down: 503) are answered by the lane, the errors as
the route's exception handlers answer them, without reading twice; anything else (a
malformed id, a query string, HEAD, a NUL) reaches FastAPI and is answered exactly as
before, and an unexpected error goes on to the same backstop (500).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bazaar.catalog.api import products
from bazaar.catalog.app import create_app
from bazaar.catalog.config import CatalogSettings
from bazaar.catalog.service import products as use_cases
from bazaar.shared import telemetry
from bazaar.shared.dbfailure import DatabaseBusy
from bazaar.shared.fastlane import FastLane
from bazaar.shared.telemetry import TracerProvider
from bazaar.shared.testing.asgi import serve_in_process

#: Headers that differ between any two requests, whichever path answers.
PER_REQUEST_HEADERS = {b"x-request-id", b"x-trace-id", b"date"}
#: Nothing listens on port 1: connecting is refused at once.
UNREACHABLE_DATABASE_URL = "postgresql://postgres@127.0.0.1:1/nowhere"

NewProduct = Callable[..., Awaitable[dict[str, Any]]]


def lane_of(app: FastAPI) -> FastLane:
    """The app's fast lane (its middleware stack is built once the app has started)."""
    node: object = app.middleware_stack
    while node is not None:
        if isinstance(node, FastLane):
            return node
        node = getattr(node, "app", None)
    raise AssertionError("no fast lane in the app's middleware stack")


def has_lane(app: FastAPI) -> bool:
    try:
        lane_of(app)
    except AssertionError:
        return False
    return True


def stable_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """Every header, in order, but the per-request ones."""
    return [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in PER_REQUEST_HEADERS]


def assert_same_answer(fast: httpx.Response, plain: httpx.Response) -> None:
    """Status, body and headers equal byte for byte (a problem's trace_id aside)."""
    assert fast.status_code == plain.status_code, (fast.text, plain.text)
    assert stable_headers(fast) == stable_headers(plain)
    if fast.headers.get("content-type") == "application/problem+json" and fast.content:
        fast_body, plain_body = fast.json(), plain.json()
        assert fast_body.pop("trace_id") == fast.headers["X-Trace-Id"]
        assert plain_body.pop("trace_id") == plain.headers["X-Trace-Id"]
        assert fast_body == plain_body
    else:
        assert fast.content == plain.content


@pytest_asyncio.fixture
async def plain_client(
    client: httpx.AsyncClient,
    catalog_settings: CatalogSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[httpx.AsyncClient]:
    """The catalog built without fast routes, over the same database (the reference)."""
    monkeypatch.setattr(products, "FAST_ROUTES", ())
    app = create_app(catalog_settings)
    async with serve_in_process(app, base_url="http://catalog.test") as c:
        assert not has_lane(app)
        yield c


@pytest.mark.parametrize(
    ("if_none_match", "upper", "status"),
    [
        (None, False, 200),
        ("{etag}", False, 304),
        ('"stale"', False, 200),
        ("*", False, 304),
        ("W/{etag}", False, 304),
        ('"stale", {etag}', False, 304),
        ('W/"stale", W/"other"', False, 200),
        ("garbage", False, 200),
        (None, True, 200),
        ("{etag}", True, 304),
    ],
    ids=[
        "plain",
        "matching",
        "not-matching",
        "star",
        "weak-form",
        "in-a-list",
        "list-not-matching",
        "unparsable",
        "uppercase-id",
        "uppercase-id-matching",
    ],
)
async def test_the_fast_lane_answers_a_read_exactly_as_the_route_does(
    client: httpx.AsyncClient,
    plain_client: httpx.AsyncClient,
    catalog_app: FastAPI,
    new_product: NewProduct,
    if_none_match: str | None,
    upper: bool,
    status: int,
) -> None:
    product = await new_product(name="Mug", description="Blue, 0.3 l")
    etag = (await plain_client.get(f"/v1/products/{product['id']}")).headers["ETag"]
    url = f"/v1/products/{product['id'].upper() if upper else product['id']}"
    headers = {} if if_none_match is None else {"If-None-Match": if_none_match.format(etag=etag)}
    lane = lane_of(catalog_app)
    answered, declined = lane.answered, lane.declined

    fast = await client.get(url, headers=headers)
    plain = await plain_client.get(url, headers=headers)

    assert (lane.answered, lane.declined) == (answered + 1, declined), "the lane did not answer"
    assert fast.status_code == status
    assert_same_answer(fast, plain)
    if status == 200:
        assert fast.json() == product
    else:
        assert fast.content == b""


@pytest.mark.parametrize(
    ("path", "headers", "method", "counted", "status"),
    [
        # The lane answers an unknown product itself, with the route's own 404 problem.
        ("/v1/products/{unknown}", {}, "GET", (1, 0), 404),
        ("/v1/products/{unknown}", {"If-None-Match": "*"}, "GET", (1, 0), 404),
        ("/v1/products/not-a-uuid", {}, "GET", (0, 0), 422),
        ("/v1/products/{id}x", {}, "GET", (0, 0), 422),
        ("/v1/products/{id}/", {}, "GET", (0, 0), 404),
        ("/v1/products/{hex}", {}, "GET", (0, 0), 200),
        ("/v1/products/{id}?fields=name", {}, "GET", (0, 0), 200),
        ("/v1/products/{id}", {}, "HEAD", (0, 0), 405),
        ("/v1/products/{id}", {"X-Note": "a\x00b"}, "GET", (0, 1), 422),
        ("/v1/products/{id}", {"If-None-Match": '"a\x00"'}, "GET", (0, 1), 422),
        ("/v1/products/%00", {}, "GET", (0, 0), 422),
    ],
    ids=[
        "unknown-product",
        "unknown-product-star",
        "not-a-uuid",
        "uuid-and-more",
        "trailing-slash",
        "unhyphenated-uuid",
        "query-string",
        "head",
        "nul-in-a-header",
        "nul-in-if-none-match",
        "nul-in-the-path",
    ],
)
async def test_anything_but_a_plain_read_goes_the_normal_way_and_answers_as_before(
    client: httpx.AsyncClient,
    plain_client: httpx.AsyncClient,
    catalog_app: FastAPI,
    new_product: NewProduct,
    path: str,
    headers: dict[str, str],
    method: str,
    counted: tuple[int, int],
    status: int,
) -> None:
    product = await new_product()
    url = path.format(id=product["id"], hex=uuid.UUID(product["id"]).hex, unknown=uuid.uuid4())
    lane = lane_of(catalog_app)
    answered, declined = lane.answered, lane.declined

    fast = await client.request(method, url, headers=headers)
    plain = await plain_client.request(method, url, headers=headers)

    # (answered, declined) by the lane: a request its pattern took then left is declined;
    # others pass it by.
    assert (lane.answered - answered, lane.declined - declined) == counted
    assert fast.status_code == status, fast.text
    assert_same_answer(fast, plain)


@pytest.mark.parametrize(
    ("error", "status", "answered_here"),
    [(DatabaseBusy(), 503, 1), (RuntimeError("a bug"), 500, 0)],
    ids=["database-busy", "a-bug"],
)
async def test_an_error_in_the_read_is_answered_as_the_route_answers_it_without_a_second_read(
    client: httpx.AsyncClient,
    plain_client: httpx.AsyncClient,
    catalog_app: FastAPI,
    new_product: NewProduct,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
    answered_here: int,
) -> None:
    product = await new_product()
    calls = 0

    async def failing(*_args: Any, **_kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        raise error

    monkeypatch.setattr(use_cases, "get_product", failing)
    lane = lane_of(catalog_app)
    answered, declined = lane.answered, lane.declined

    fast = await client.get(f"/v1/products/{product['id']}")
    plain = await plain_client.get(f"/v1/products/{product['id']}")

    # A mapped error (503) is answered by the lane; any other goes on to the backstop (500).
    assert (lane.answered, lane.declined) == (answered + answered_here, declined)
    assert calls == 2, "the lane's read and the reference app's: the route never reads again"
    assert fast.status_code == status
    assert_same_answer(fast, plain)


async def test_with_the_database_down_the_read_answers_503_as_before(
    catalog_settings: CatalogSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = catalog_settings.model_copy(
        update={"database_url": SecretStr(UNREACHABLE_DATABASE_URL), "db_pool_min": 0}
    )
    url = f"/v1/products/{uuid.uuid4()}"
    app = create_app(down)
    async with serve_in_process(app, base_url="http://catalog.test") as client:
        fast = await client.get(url)
        lane = lane_of(app)
    monkeypatch.setattr(products, "FAST_ROUTES", ())
    async with serve_in_process(create_app(down), base_url="http://catalog.test") as client:
        plain = await client.get(url)

    assert (lane.answered, lane.declined) == (1, 0), "the lane answered the 503 itself"
    assert fast.status_code == 503
    assert "Retry-After" in fast.headers
    assert_same_answer(fast, plain)


async def test_a_fast_answer_carries_the_ids_and_is_timed_and_logged_under_its_route(
    client: httpx.AsyncClient,
    catalog_app: FastAPI,
    new_product: NewProduct,
    caplog: pytest.LogCaptureFixture,
) -> None:
    product = await new_product()
    lane = lane_of(catalog_app)
    answered = lane.answered
    caplog.set_level(logging.INFO, logger="bazaar.access")

    response = await client.get(
        f"/v1/products/{product['id']}", headers={"X-Request-ID": "read-fast-1"}
    )

    assert lane.answered == answered + 1
    assert response.status_code == 200
    # The lane sits inside ServiceMiddleware: the request id is kept, a trace id is given.
    assert response.headers["X-Request-ID"] == "read-fast-1"
    assert len(response.headers["X-Trace-Id"]) == 32
    assert response.headers["Server"] == "bazaar"
    [line] = [
        r
        for r in caplog.records
        if r.name == "bazaar.access" and r.getMessage().startswith("GET /v1/products/")
    ]
    assert line.__dict__["http_route"] == "/v1/products/{product_id}"
    assert line.__dict__["http_status"] == 200
    scrape = await client.get("/metrics")
    counts = {
        (s.labels["http_request_method"], s.labels["http_route"]): s.value
        for f in text_string_to_metric_families(scrape.text)
        for s in f.samples
        if s.name == "http_server_request_duration_seconds_count"
        and s.labels["http_response_status_code"] == "200"
    }
    assert counts[("GET", "/v1/products/{product_id}")] == 1


@pytest.mark.parametrize("known", [True, False], ids=["read", "unknown-product"])
async def test_with_traces_exported_the_lane_answers_with_the_routes_server_span(
    catalog_settings: CatalogSettings,
    new_product: NewProduct,
    monkeypatch: pytest.MonkeyPatch,
    known: bool,
) -> None:
    # As deployed with OTEL_EXPORTER_OTLP_ENDPOINT: FastAPI's native telemetry records a
    # server span per request, and the lane must answer with the same span as the route.
    exporter = InMemorySpanExporter()
    exporting = TracerProvider(Resource.create({"service.name": "catalog"}))
    exporting.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "_provider", exporting)
    product = await new_product()
    url = f"/v1/products/{product['id'] if known else uuid.uuid4()}"
    traceparent = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    spans = {}
    for name, fast_routes in (("fast", products.FAST_ROUTES), ("plain", ())):
        monkeypatch.setattr(products, "FAST_ROUTES", fast_routes)
        app = create_app(catalog_settings)
        async with serve_in_process(app, base_url="http://catalog.test") as c:
            response = await c.get(url, headers=traceparent)
            if fast_routes:
                assert (lane_of(app).answered, lane_of(app).declined) == (1, 0)
        assert response.status_code == (200 if known else 404)
        [span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
        assert format(span.context.trace_id, "032x") == response.headers["X-Trace-Id"]
        spans[name] = span
        exporter.clear()

    fast, plain = spans["fast"], spans["plain"]
    assert fast.name == plain.name == "GET /v1/products/{product_id}"
    assert dict(fast.attributes or {}) == dict(plain.attributes or {})
    assert (fast.status.status_code, fast.parent) == (plain.status.status_code, plain.parent)
