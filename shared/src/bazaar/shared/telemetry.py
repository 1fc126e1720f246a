"""OpenTelemetry set-up: W3C propagation, instrumentation, OTLP export only when configured."""

from __future__ import annotations

import threading

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.propagate import set_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bazaar.shared.health import QUIET_PATHS

_lock = threading.Lock()
_provider: TracerProvider | None = None

UNTRACED_PATHS = ",".join(path.lstrip("/") for path in sorted(QUIET_PATHS))


def setup_tracing(service: str, version: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install the process-wide tracer provider once; export over OTLP when an endpoint is set."""
    global _provider
    with _lock:
        if _provider is None:
            set_global_textmap(
                CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
            )
            provider = TracerProvider(
                resource=Resource.create({"service.name": service, "service.version": version})
            )
            if otlp_endpoint:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

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


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """Trace every request of `app` (server spans continue an incoming traceparent)."""
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=UNTRACED_PATHS,
        exclude_spans=["receive", "send"],
    )
