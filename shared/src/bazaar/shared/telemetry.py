"""OpenTelemetry set-up: trace ids always, spans recorded only when someone receives them.

A process that exports nothing pays nothing (DESIGN.md, "Observability"): its tracer
provider hands out non-recording spans that carry the right ids (an incoming trace
continued, or a fresh one), enough for `X-Trace-Id`, the logs' trace and span ids and the
`traceparent` of events and outgoing calls. Once a span processor is attached (the OTLP
exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, a test's in-memory exporter), an SDK
provider records every span from then on, and apps built afterwards get server spans
from FastAPI's native telemetry.
"""

from __future__ import annotations

import random
import threading
from collections.abc import MutableMapping, Sequence
from contextvars import Token
from typing import Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagate import set_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from bazaar.shared.health import QUIET_PATHS
from bazaar.shared.traceparent import TraceContext

_lock = threading.Lock()
_provider: TracerProvider | None = None
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def child_context(parent: SpanContext) -> SpanContext:
    """A new span id in `parent`'s trace, or a new sampled trace when `parent` is invalid."""
    span_id = random.getrandbits(64) or 1
    if parent.is_valid:
        return SpanContext(
            parent.trace_id,
            span_id,
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )
    trace_id = random.getrandbits(128) or 1
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED)


def span_context_of(ids: TraceContext) -> SpanContext:
    """The OpenTelemetry span context of a request's trace ids (see `bazaar.shared.traceparent`)."""
    return SpanContext(
        int(ids.trace_id, 16),
        int(ids.span_id, 16),
        is_remote=False,
        trace_flags=TraceFlags(int(ids.flags, 16)),
    )


def attach_ids(ids: TraceContext) -> Token[otel_context.Context]:
    """Make `ids` the current span (non-recording); returns the token for `detach`."""
    span = NonRecordingSpan(span_context_of(ids))
    return otel_context.attach(trace.set_span_in_context(span))


detach = otel_context.detach


class _Tracer(trace.NoOpTracer):
    """Non-recording spans with real ids; the SDK's recording spans once a processor exists."""

    def __init__(
        self,
        provider: TracerProvider,
        name: str,
        version: str | None,
        schema: str | None,
        attributes: Attributes,
    ) -> None:
        self._provider = provider
        self._scope = (name, version, schema, attributes)
        #: The SDK tracer of the provider's current SDK (a new one after `stop_recording`).
        self._recording: tuple[SdkTracerProvider, trace.Tracer] | None = None

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        """Start a span under `context` (the current one by default)."""
        sdk = self._provider.sdk
        if sdk is None:
            return NonRecordingSpan(
                child_context(trace.get_current_span(context).get_span_context())
            )
        if self._recording is None or self._recording[0] is not sdk:
            self._recording = (sdk, sdk.get_tracer(*self._scope))
        return self._recording[1].start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )


class TracerProvider(trace.TracerProvider):
    """The process's tracer provider: ids only, until a span processor is attached."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.sdk: SdkTracerProvider | None = None
        self._lock = threading.Lock()

    @property
    def recording(self) -> bool:
        """Whether spans are recorded (someone receives them)."""
        return self.sdk is not None

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Hand every span from now on to `processor` (spans are recorded from then on)."""
        with self._lock:
            if self.sdk is None:
                self.sdk = SdkTracerProvider(resource=self.resource)
            self.sdk.add_span_processor(processor)

    def stop_recording(self) -> None:
        """Shut down and drop every span processor: spans are ids only again.

        For tests that attach an exporter to the process's provider: without it, every app
        built later in the same process would record and export spans.
        """
        with self._lock:
            sdk, self.sdk = self.sdk, None
        if sdk is not None:
            sdk.shutdown()

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        """A tracer that records only while a processor is attached."""
        return _Tracer(
            self, instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is batched (nothing to do when nothing records)."""
        return self.sdk.force_flush(timeout_millis) if self.sdk is not None else True

    def shutdown(self) -> None:
        """Flush and stop the span processors."""
        if self.sdk is not None:
            self.sdk.shutdown()


def setup_tracing(service: str, version: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install the process-wide tracer provider once; export over OTLP when an endpoint is set."""
    global _provider
    with _lock:
        if _provider is None:
            set_global_textmap(
                CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
            )
            provider = TracerProvider(
                Resource.create({"service.name": service, "service.version": version})
            )
            if otlp_endpoint:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
                from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
                from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
                provider.add_span_processor(BatchSpanProcessor(exporter))
                # A span per query and per outgoing call is worth its cost (measured: about
                # a fifth of a service's CPU per order) only when someone receives it.
                # Sampling (OTEL_TRACES_SAMPLER) trims it further.
                AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
                HTTPXClientInstrumentor().instrument(tracer_provider=provider)
            trace.set_tracer_provider(provider)
            _provider = provider
        return _provider


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in QUIET_PATHS


def server_telemetry(provider: TracerProvider) -> TelemetryConfig:
    """FastAPI's native telemetry for one app: a server span per request, only when recording.

    Probes and scrapes (`QUIET_PATHS`) are never traced. Metrics stay Prometheus's
    (`bazaar.shared.metrics`), logs our JSON lines; no environment auto-configuration.
    """
    if not provider.recording:
        return {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    return {
        "tracer_provider": provider,
        "tracing": True,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
        "exclude": _untraced,
    }
