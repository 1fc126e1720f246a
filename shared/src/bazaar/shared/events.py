"""The CloudEvents 1.0 envelope (structured JSON mode) every Bazaar event travels in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_jsonable_python

from bazaar.shared.tracecontext import current_traceparent

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"


def make_event(
    *,
    source: str,
    type: str,
    subject: str,
    data: Any,
    traceparent: str | None = None,
    event_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Build one CloudEvent; the current trace's `traceparent` rides along unless one is given."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(event_id or uuid.uuid4()),
        "source": source,
        "type": type,
        "subject": subject,
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": to_jsonable_python(data),
    }
    parent = traceparent or current_traceparent()
    if parent:
        event["traceparent"] = parent
    return event
