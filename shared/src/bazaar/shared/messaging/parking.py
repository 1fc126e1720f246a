"""Retry and parking: where failed messages wait, and how operators list and re-drive them."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bazaar.shared.messaging.envelope import (
    ATTEMPTS_HEADER,
    PARKED_AT_HEADER,
    PARKED_FROM_HEADER,
    PARKED_REASON_HEADER,
    attempts_of,
    copy_with_headers,
)
from bazaar.shared.messaging.topology import QueueNames

#: The most messages one operator command looks at.
MAX_SCAN = 10_000


async def send_to_retry(
    channel: AbstractChannel, message: AbstractIncomingMessage, retry_queue: str, *, attempts: int
) -> None:
    """Publish a copy to a retry queue (confirmed); its TTL sends it back to the main queue."""
    copy = copy_with_headers(message, **{ATTEMPTS_HEADER: attempts})
    await channel.default_exchange.publish(copy, routing_key=retry_queue, mandatory=True)


async def park(
    channel: AbstractChannel,
    message: AbstractIncomingMessage,
    names: QueueNames,
    *,
    reason: str,
    attempts: int,
) -> None:
    """Publish a copy to the parking queue with why, from where and when (confirmed)."""
    copy = copy_with_headers(
        message,
        **{
            ATTEMPTS_HEADER: attempts,
            PARKED_REASON_HEADER: reason,
            PARKED_FROM_HEADER: names.main,
            PARKED_AT_HEADER: datetime.now(UTC).isoformat(),
        },
    )
    await channel.default_exchange.publish(copy, routing_key=names.parking, mandatory=True)


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    """A parked message as an operator sees it."""

    message_id: str | None
    type: str | None
    reason: str
    parked_at: str
    attempts: int
    body: str

    def summary(self) -> dict[str, Any]:
        """The message without its body."""
        return {
            "message_id": self.message_id,
            "type": self.type,
            "reason": self.reason,
            "parked_at": self.parked_at,
            "attempts": self.attempts,
        }

    def detail(self) -> dict[str, Any]:
        """The message with its body (parsed when it is JSON)."""
        try:
            body: Any = json.loads(self.body)
        except ValueError:
            body = self.body
        return {**self.summary(), "body": body}


def _parked(message: AbstractIncomingMessage) -> ParkedMessage:
    headers = message.headers or {}
    return ParkedMessage(
        message_id=message.message_id,
        type=message.type,
        reason=str(headers.get(PARKED_REASON_HEADER, "")),
        parked_at=str(headers.get(PARKED_AT_HEADER, "")),
        attempts=attempts_of(message),
        body=message.body.decode("utf-8", errors="replace"),
    )


async def _take_all(channel: AbstractChannel, queue: str) -> list[AbstractIncomingMessage]:
    """Get every message of a queue unacknowledged; closing the channel puts them all back."""
    parking = await channel.declare_queue(queue, passive=True)
    taken: list[AbstractIncomingMessage] = []
    while len(taken) < MAX_SCAN:
        message = await parking.get(no_ack=False, fail=False)
        if message is None:
            break
        taken.append(message)
    return taken


async def list_parked(url: str, consumer_queue: str) -> list[ParkedMessage]:
    """Every message parked for one consumer, oldest first; the queue is left as it was."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        return [_parked(m) for m in await _take_all(channel, QueueNames(consumer_queue).parking)]


async def redrive_parked(
    url: str, consumer_queue: str, message_ids: Collection[str] | None = None
) -> int:
    """Send parked messages (all, or those ids) back to their consumer with fresh attempts."""
    names = QueueNames(consumer_queue)
    moved = 0
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for message in await _take_all(channel, names.parking):
            if message_ids is not None and message.message_id not in message_ids:
                continue
            copy = copy_with_headers(
                message,
                **{
                    ATTEMPTS_HEADER: None,
                    PARKED_REASON_HEADER: None,
                    PARKED_FROM_HEADER: None,
                    PARKED_AT_HEADER: None,
                },
            )
            await channel.default_exchange.publish(copy, routing_key=names.main, mandatory=True)
            await message.ack()
            moved += 1
    return moved
