"""CloudEvents on the wire: structured JSON mode, persistent, with the trace in the headers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bazaar.shared.events import CLOUDEVENTS_CONTENT_TYPE

#: How many times a message has failed so far (absent on the first delivery).
ATTEMPTS_HEADER = "x-bazaar-attempts"
#: Why a message was parked, and by which queue.
PARKED_REASON_HEADER = "x-bazaar-parked-reason"
PARKED_FROM_HEADER = "x-bazaar-parked-from"
PARKED_AT_HEADER = "x-bazaar-parked-at"
#: What the broker counts (quorum queues): never copied, a copy is a fresh message to it.
DELIVERY_COUNT_HEADER = "x-delivery-count"
#: What the broker writes when it dead-letters a message (why, from where, how often).
DEATH_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


class MalformedEvent(ValueError):
    """A message body is not a CloudEvent this code can read."""


def encode_event(
    event: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
) -> aio_pika.Message:
    """The AMQP message carrying one CloudEvent."""
    return aio_pika.Message(
        body=json.dumps(event, separators=(",", ":")).encode(),
        content_type=CLOUDEVENTS_CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(event["id"]),
        type=str(event["type"]),
        timestamp=datetime.now(UTC),
        headers=dict(headers or {}),
    )


def decode_event(body: bytes) -> dict[str, Any]:
    """The CloudEvent in a message body, or MalformedEvent."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"body is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise MalformedEvent("body is not a JSON object")
    for attribute in ("id", "type", "source", "specversion"):
        if not isinstance(event.get(attribute), str) or not event[attribute]:
            raise MalformedEvent(f"the CloudEvents attribute {attribute!r} is missing")
    return event


def attempts_of(message: AbstractIncomingMessage) -> int:
    """How many times this message has already failed."""
    value = (message.headers or {}).get(ATTEMPTS_HEADER, 0)
    return value if isinstance(value, int) else 0


def copy_with_headers(message: AbstractIncomingMessage, **headers: Any) -> aio_pika.Message:
    """A persistent copy of a received message with some headers set (None removes one)."""
    merged = dict(message.headers or {})
    merged.pop(DELIVERY_COUNT_HEADER, None)
    for name, value in headers.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return aio_pika.Message(
        body=message.body,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        timestamp=message.timestamp,
        headers=merged,
    )
