"""With traces exported, every request through the gateway is one SERVER span of its trace."""

from __future__ import annotations

import re

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bazaar.gateway.app import create_app
from bazaar.gateway.spans import SpanRecorder

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def _gateway_with_spans(fakes, gateways):
    exporter = InMemorySpanExporter()
    recorder = SpanRecorder(SimpleSpanProcessor(exporter), service="gateway", version="test")
    catalog = await fakes.upstream("catalog")
    settings = gateways.settings({"catalog": catalog})
    client = await gateways.serve(create_app(settings, spans=recorder))
    return client, catalog, exporter


async def test_the_gateway_span_is_the_parent_it_forwards_and_the_child_of_the_callers(
    fakes, gateways
) -> None:
    client, catalog, exporter = await _gateway_with_spans(fakes, gateways)
    response = await client.get(
        "/v1/products", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    )
    assert response.status == 200
    forwarded = TRACEPARENT.fullmatch(catalog.seen[0].headers["traceparent"])
    assert forwarded is not None
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /v1/products"
    assert span.attributes["http.route"] == "/v1/products"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.context.span_id, "016x") == forwarded[2]
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.path"] == "/v1/products"
    assert span.resource.attributes["service.name"] == "gateway"
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time


async def test_a_trace_started_at_the_gateway_has_a_root_span_and_only_5xx_is_an_error(
    fakes, gateways
) -> None:
    client, _catalog, exporter = await _gateway_with_spans(fakes, gateways)
    refused = await client.get("/v1/orders")  # no token: the gateway answers 401 itself
    broken = await client.get("/v1/auth/anything")  # auth refuses connections: 502
    assert (refused.status, broken.status) == (401, 502)
    [client_error, upstream_error] = exporter.get_finished_spans()
    assert client_error.parent is None and upstream_error.parent is None
    assert format(upstream_error.context.trace_id, "032x") == broken.headers["X-Trace-Id"]
    assert client_error.status.status_code is StatusCode.UNSET  # the client's mistake
    assert upstream_error.status.status_code is StatusCode.ERROR


async def test_an_unsampled_trace_records_no_span(fakes, gateways) -> None:
    client, _catalog, exporter = await _gateway_with_spans(fakes, gateways)
    response = await client.get(
        "/v1/products", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
    )
    assert response.status == 200
    assert exporter.get_finished_spans() == ()
