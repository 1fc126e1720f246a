"""Telemetry: trace ids always, spans recorded only once someone receives them."""

from __future__ import annotations

import re
from typing import ClassVar

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from pydantic_settings import SettingsConfigDict

from bazaar.shared import telemetry
from bazaar.shared.app import create_service_app
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.telemetry import TracerProvider, child_context, server_telemetry
from bazaar.shared.tracecontext import current_trace_id, current_traceparent
from bazaar.shared.traceparent import continue_or_start, fresh_ids

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def provider() -> TracerProvider:
    return TracerProvider(Resource.create({"service.name": "test"}))


def test_without_a_processor_spans_carry_ids_but_record_nothing() -> None:
    tracer = provider().get_tracer("test")
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner") as inner:
            pass
    assert not outer.is_recording()
    assert isinstance(outer, NonRecordingSpan)
    assert outer.get_span_context().is_valid
    assert outer.get_span_context().trace_flags.sampled
    assert inner.get_span_context().trace_id == outer.get_span_context().trace_id
    assert inner.get_span_context().span_id != outer.get_span_context().span_id


def test_a_span_under_a_remote_parent_continues_its_trace_with_a_new_span_id() -> None:
    parent = SpanContext(
        int(TRACE_ID, 16), int(PARENT_ID, 16), is_remote=True, trace_flags=TraceFlags(1)
    )
    context = trace.set_span_in_context(NonRecordingSpan(parent))
    span = provider().get_tracer("test").start_span("child", context=context)
    assert format(span.get_span_context().trace_id, "032x") == TRACE_ID
    assert format(span.get_span_context().span_id, "016x") != PARENT_ID
    assert child_context(parent).trace_flags == parent.trace_flags


def test_once_a_processor_is_attached_spans_are_recorded_also_by_earlier_tracers() -> None:
    exporting = provider()
    tracer = exporting.get_tracer("test")  # handed out before anyone received spans
    assert not exporting.recording
    exporter = InMemorySpanExporter()
    exporting.add_span_processor(SimpleSpanProcessor(exporter))
    with tracer.start_as_current_span("work") as span:
        assert span.is_recording()
    assert exporting.recording
    assert [s.name for s in exporter.get_finished_spans()] == ["work"]


def test_a_provider_that_stops_recording_hands_out_ids_only_again() -> None:
    exporting = provider()
    tracer = exporting.get_tracer("test")
    first = InMemorySpanExporter()
    exporting.add_span_processor(SimpleSpanProcessor(first))
    with tracer.start_as_current_span("recorded"):
        pass
    exporting.stop_recording()
    assert not exporting.recording
    with tracer.start_as_current_span("not recorded") as span:
        assert not span.is_recording()
    assert server_telemetry(exporting)["tracing"] is False
    second = InMemorySpanExporter()  # recording again: the same tracers, the new processor
    exporting.add_span_processor(SimpleSpanProcessor(second))
    with tracer.start_as_current_span("again") as span:
        assert span.is_recording()
    assert [s.name for s in first.get_finished_spans()] == ["recorded"]
    assert [s.name for s in second.get_finished_spans()] == ["again"]


def test_fastapi_native_telemetry_is_off_unless_spans_are_recorded() -> None:
    quiet = provider()
    assert server_telemetry(quiet)["tracing"] is False
    exporting = provider()
    exporting.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    config = server_telemetry(exporting)
    assert config["tracing"] is True
    assert config["tracer_provider"] is exporting
    assert config["operation_spans"] is False
    exclude = config["exclude"]
    assert exclude is not None
    assert exclude({"type": "http", "path": "/readyz"})
    assert not exclude({"type": "http", "path": "/v1/products"})


def test_an_incoming_traceparent_is_continued_else_a_sampled_trace_starts() -> None:
    ids = fresh_ids()
    continued = continue_or_start(f"00-{TRACE_ID}-{PARENT_ID}-01", ids)
    assert (continued.trace_id, continued.parent_id, continued.span_id) == (
        TRACE_ID,
        PARENT_ID,
        ids[32:48],
    )
    assert continued.traceparent() == f"00-{TRACE_ID}-{ids[32:48]}-01"
    for header in (None, "garbage", f"00-{'0' * 32}-{PARENT_ID}-01", f"01-{TRACE_ID}-x-01"):
        started = continue_or_start(header, ids)
        assert (started.trace_id, started.parent_id, started.flags) == (ids[:32], None, "01")


class ProbeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROBESVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "probes"


def probe_app(seen: dict[str, object]) -> FastAPI:
    router = APIRouter()

    @router.get("/probe/{name}")
    async def probe(name: str) -> dict[str, str]:
        seen["recording"] = trace.get_current_span().is_recording()
        seen["trace_id"] = current_trace_id()
        seen["traceparent"] = current_traceparent()
        return {"name": name}

    return create_service_app(
        ProbeSettings(environment="test"),
        title="Probes",
        description="One route.",
        routers=[router],
        error_map={},
    )


async def get(app: FastAPI, path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probes") as client:
        return await client.get(path, headers=headers)


async def test_a_service_exporting_nothing_continues_the_trace_and_records_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telemetry, "_provider", provider())
    seen: dict[str, object] = {}
    app = probe_app(seen)
    response = await get(app, "/probe/a", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert response.status_code == 200
    assert seen["recording"] is False
    assert seen["trace_id"] == response.headers["X-Trace-Id"] == TRACE_ID
    traceparent = str(seen["traceparent"])
    assert traceparent.startswith(f"00-{TRACE_ID}-") and traceparent.endswith("-01")
    assert PARENT_ID not in traceparent  # a span of this service's own
    fresh = await get(app, "/probe/b", {})
    assert HEX32.match(fresh.headers["X-Trace-Id"])
    assert fresh.headers["X-Trace-Id"] != TRACE_ID


async def test_a_service_exporting_records_one_server_span_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporting = provider()
    exporter = InMemorySpanExporter()
    exporting.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "_provider", exporting)
    seen: dict[str, object] = {}
    app = probe_app(seen)
    response = await get(app, "/probe/a", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert (await get(app, "/healthz", {})).status_code == 200  # probes are never traced
    [served] = exporter.get_finished_spans()
    assert served.kind is SpanKind.SERVER
    assert served.name == "GET /probe/{name}"
    assert format(served.context.trace_id, "032x") == TRACE_ID == response.headers["X-Trace-Id"]
    assert served.parent is not None and format(served.parent.span_id, "016x") == PARENT_ID
    assert seen["recording"] is True
    assert seen["traceparent"] == f"00-{TRACE_ID}-{served.context.span_id:016x}-01"
