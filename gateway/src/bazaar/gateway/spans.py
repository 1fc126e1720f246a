"""The gateway's server spans, exported over OTLP only when an endpoint is configured.

The gateway makes its trace and span ids itself (cheaply, see `tracing`); when traces are
exported, each finished request becomes one SERVER span with exactly those ids, so the
trace a client sees in `X-Trace-Id` runs gateway → service → broker → consumer in Jaeger.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from bazaar.shared.traceparent import TraceContext

_SCOPE = InstrumentationScope("bazaar.gateway")


class SpanRecorder:
    """Hands one finished span per request to a span processor (batching, exporting)."""

    def __init__(self, processor: SpanProcessor, *, service: str, version: str) -> None:
        self._processor = processor
        self._resource = Resource.create({"service.name": service, "service.version": version})

    def record(
        self,
        trace: TraceContext,
        *,
        name: str,
        start_ns: int,
        end_ns: int,
        status: int,
        attributes: Mapping[str, str | int],
    ) -> None:
        """Record the request's span if its trace is sampled."""
        flags = TraceFlags(int(trace.flags, 16))
        if not flags.sampled:
            return
        trace_id = int(trace.trace_id, 16)
        parent = None
        if trace.parent_id is not None:
            parent = SpanContext(
                trace_id, int(trace.parent_id, 16), is_remote=True, trace_flags=flags
            )
        span = ReadableSpan(
            name=name,
            context=SpanContext(
                trace_id, int(trace.span_id, 16), is_remote=False, trace_flags=flags
            ),
            parent=parent,
            resource=self._resource,
            attributes={**attributes, "http.response.status_code": status},
            kind=SpanKind.SERVER,
            status=Status(StatusCode.ERROR) if status >= 500 else Status(StatusCode.UNSET),
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=_SCOPE,
        )
        self._processor.on_end(span)

    def shutdown(self) -> None:
        """Flush what is batched and stop."""
        self._processor.shutdown()


def otlp_recorder(endpoint: str | None, *, version: str) -> SpanRecorder | None:
    """A recorder exporting to `endpoint` over OTLP/HTTP, or None when none is configured."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    return SpanRecorder(BatchSpanProcessor(exporter), service="gateway", version=version)
