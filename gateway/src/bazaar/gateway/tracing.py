"""W3C Trace Context at the edge: continue an incoming trace or start one (cheaply)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace this request belongs to, and the gateway's own span in it."""

    trace_id: str
    span_id: str
    parent_id: str | None
    flags: str

    def traceparent(self) -> str:
        """The `traceparent` to send upstream: same trace, the gateway's span as parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def fresh_ids() -> str:
    """80 random hex digits from one system call: a trace id, a span id and a request id."""
    return os.urandom(40).hex()


def continue_or_start(header: str | None, entropy: str | None = None) -> TraceContext:
    """Continue a valid incoming `traceparent` (new span id), else start a sampled trace.

    `entropy` (from `fresh_ids`) supplies the new ids; the first 48 digits are used.
    """
    ids = entropy or fresh_ids()
    if header is not None:
        match = _TRACEPARENT.match(header.strip().lower())
        if match and match[1] != _ZERO_TRACE and match[2] != _ZERO_SPAN:
            return TraceContext(match[1], ids[32:48], match[2], match[3])
    return TraceContext(ids[:32], ids[32:48], None, "01")
