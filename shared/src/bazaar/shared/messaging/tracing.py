"""Producer and consumer spans (OpenTelemetry messaging conventions) tied by `traceparent`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, StatusCode

from bazaar.shared.messaging.topology import EVENTS_EXCHANGE

_tracer = trace.get_tracer("bazaar.shared.messaging")


def _parent(traceparent: str | None) -> context.Context | None:
    return extract({"traceparent": traceparent}) if traceparent else None


@contextmanager
def producer_span(event: Mapping[str, Any], traceparent: str | None) -> Iterator[dict[str, str]]:
    """A `publish` span under the request that wrote the event; yields headers carrying it."""
    # Not made current: the relay publishes hundreds at once, attaching each costs time.
    span = _tracer.start_span(
        f"publish {EVENTS_EXCHANGE}",
        context=_parent(traceparent),
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.destination.name": EVENTS_EXCHANGE,
            "messaging.rabbitmq.destination.routing_key": str(event.get("type", "")),
            "messaging.message.id": str(event.get("id", "")),
        },
    )
    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span))
    try:
        yield carrier
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        raise
    finally:
        span.end()


@contextmanager
def consumer_span(
    queue: str, event: Mapping[str, Any], headers: Mapping[str, Any]
) -> Iterator[Span]:
    """A `process` span continuing the trace of the message (its header, else the event's)."""
    traceparent = headers.get("traceparent") or event.get("traceparent")
    with _tracer.start_as_current_span(
        f"process {queue}",
        context=_parent(traceparent if isinstance(traceparent, str) else None),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.consumer.group.name": queue,
            "messaging.rabbitmq.destination.routing_key": str(event.get("type", "")),
            "messaging.message.id": str(event.get("id", "")),
        },
    ) as span:
        yield span
