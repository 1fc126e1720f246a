"""The ids that tie one request together: trace id (OpenTelemetry) and request id."""

from __future__ import annotations

from contextvars import ContextVar

from opentelemetry import trace

request_id_var: ContextVar[str | None] = ContextVar("bazaar_request_id", default=None)


def current_trace_id() -> str | None:
    """The 32-hex trace id of the current span, or None outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def current_span_id() -> str | None:
    """The 16-hex span id of the current span, or None outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.span_id, "016x") if ctx.is_valid else None


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, to carry into events and outgoing calls."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def current_request_id() -> str | None:
    """The request id of the request being served, if any."""
    return request_id_var.get()
