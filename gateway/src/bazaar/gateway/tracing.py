"""W3C Trace Context at the edge: continue an incoming trace or start one (cheaply)."""

from __future__ import annotations

import re
import secrets
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


def continue_or_start(header: str | None) -> TraceContext:
    """Continue a valid incoming `traceparent` (new span id), else start a sampled trace."""
    if header is not None:
        match = _TRACEPARENT.match(header.strip().lower())
        if match and match[1] != _ZERO_TRACE and match[2] != _ZERO_SPAN:
            return TraceContext(match[1], secrets.token_hex(8), match[2], match[3])
    return TraceContext(secrets.token_hex(16), secrets.token_hex(8), None, "01")
