"""W3C Trace Context ids, cheaply: continue an incoming `traceparent` or start a trace.

Pure string work (no OpenTelemetry span): what the gateway and every service do on each
request to know the trace it belongs to, whether or not spans are recorded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

#: W3C Trace Context as OpenTelemetry reads it (its TraceContextTextMapPropagator): lowercase
#: hex only, spaces and tabs around allowed; fields after the flags only in a version after 00.
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*$"
)
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_INVALID_VERSION = "ff"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace a request belongs to, and the span this process serves it in."""

    trace_id: str
    span_id: str
    parent_id: str | None
    flags: str

    def traceparent(self) -> str:
        """The `traceparent` to send on: same trace, this process's span as parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def fresh_ids() -> str:
    """80 random hex digits from one system call: a trace id, a span id and a request id."""
    return os.urandom(40).hex()


def continue_or_start(header: str | None, entropy: str | None = None) -> TraceContext:
    """Continue a valid incoming `traceparent` (new span id), else start a sampled trace.

    Valid as OpenTelemetry's propagator has it: not version ff, no all-zero trace or
    parent id, no uppercase, nothing after the flags in version 00 (a later version may
    add fields; its first four are read). What is sent on is always version 00.
    `entropy` (from `fresh_ids`) supplies the new ids; the first 48 digits are used.
    """
    ids = entropy or fresh_ids()
    if header is not None:
        match = _TRACEPARENT.match(header)
        if (
            match
            and match[2] != _ZERO_TRACE
            and match[3] != _ZERO_SPAN
            and match[1] != _INVALID_VERSION
            and not (match[1] == "00" and match[5])
        ):
            return TraceContext(match[2], ids[32:48], match[3], match[4])
    return TraceContext(ids[:32], ids[32:48], None, "01")
