"""Stored answers as JSON text: what the store writes to and reads from its row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any

from bazaar.shared.idempotency.models import StoredResponse


def _json_default(value: Any) -> Any:
    """Encode the values API bodies commonly hold; anything else is a bug of the caller."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Any) -> str:
    """Compact JSON text of an answer's body or headers."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def stored_response(row: Mapping[str, Any]) -> StoredResponse:
    """The answer stored in an `idempotency_key` row (JSON columns read as text)."""
    body, headers = row["response_body"], row["response_headers"]
    return StoredResponse(
        status=int(row["response_status"]),
        body=None if body is None else json.loads(body),
        headers={} if headers is None else dict(json.loads(headers)),
    )
