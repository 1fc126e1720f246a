"""`continue_or_start` reads `traceparent` exactly as OpenTelemetry's W3C propagator does."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bazaar.shared.traceparent import continue_or_start, fresh_ids

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"

HEADERS = {
    "valid": f"00-{TRACE}-{SPAN}-01",
    "not-sampled": f"00-{TRACE}-{SPAN}-00",
    "other-flags": f"00-{TRACE}-{SPAN}-ff",
    "spaces-around": f"  00-{TRACE}-{SPAN}-01 \t",
    "tab-before": f"\t00-{TRACE}-{SPAN}-01",
    "newline-after": f"00-{TRACE}-{SPAN}-01\n",
    "newline-before": f"\n00-{TRACE}-{SPAN}-01",
    "cr-after": f"00-{TRACE}-{SPAN}-01\r",
    "uppercase-trace": f"00-{TRACE.upper()}-{SPAN}-01",
    "uppercase-span": f"00-{TRACE}-{SPAN.upper()}-01",
    "uppercase-flags": f"00-{TRACE}-{SPAN}-0A",
    "uppercase-version": f"0A-{TRACE}-{SPAN}-01",
    "zero-trace": f"00-{'0' * 32}-{SPAN}-01",
    "zero-span": f"00-{TRACE}-{'0' * 16}-01",
    "version-ff": f"ff-{TRACE}-{SPAN}-01",
    "version-01": f"01-{TRACE}-{SPAN}-01",
    "version-cc-more-fields": f"cc-{TRACE}-{SPAN}-01-what-the-future-holds",
    "version-01-empty-field": f"01-{TRACE}-{SPAN}-01-",
    "version-00-more-fields": f"00-{TRACE}-{SPAN}-01-extra",
    "version-00-trailing-dash": f"00-{TRACE}-{SPAN}-01-",
    "version-01-joined-suffix": f"01-{TRACE}-{SPAN}-01x",
    "version-ff-more-fields": f"ff-{TRACE}-{SPAN}-01-extra",
    "short-trace": f"00-{TRACE[:-1]}-{SPAN}-01",
    "long-trace": f"00-{TRACE}0-{SPAN}-01",
    "short-span": f"00-{TRACE}-{SPAN[:-1]}-01",
    "short-flags": f"00-{TRACE}-{SPAN}-1",
    "no-flags": f"00-{TRACE}-{SPAN}",
    "non-hex": f"00-{TRACE[:-1]}g-{SPAN}-01",
    "one-digit-version": f"0-{TRACE}-{SPAN}-01",
    "underscores": f"00_{TRACE}_{SPAN}_01",
    "garbage": "garbage",
    "empty": "",
    "blank": "   ",
}


def otel_reading(header: str) -> tuple[str, str, str] | None:
    """What OpenTelemetry continues from `header`: trace id, parent span id, flags."""
    context = TraceContextTextMapPropagator().extract({"traceparent": header})
    span = trace.get_current_span(context).get_span_context()
    if not span.is_valid:
        return None
    return f"{span.trace_id:032x}", f"{span.span_id:016x}", f"{span.trace_flags:02x}"


@pytest.mark.parametrize("header", HEADERS.values(), ids=HEADERS.keys())
def test_a_traceparent_is_continued_exactly_when_opentelemetry_continues_it(header: str) -> None:
    ids = fresh_ids()
    trace_context = continue_or_start(header, ids)
    expected = otel_reading(header)
    if expected is None:
        assert trace_context.parent_id is None
        assert (trace_context.trace_id, trace_context.flags) == (ids[:32], "01")
    else:
        assert (trace_context.trace_id, trace_context.parent_id, trace_context.flags) == expected
    assert trace_context.span_id == ids[32:48]


def test_the_cases_cover_both_answers() -> None:
    readings = {name: otel_reading(header) for name, header in HEADERS.items()}
    assert readings["valid"] == (TRACE, SPAN, "01")
    assert readings["version-cc-more-fields"] == (TRACE, SPAN, "01")
    for refused in ("uppercase-trace", "version-ff", "version-00-more-fields", "zero-span"):
        assert readings[refused] is None
