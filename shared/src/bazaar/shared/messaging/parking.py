"""Retry and parking: where failed messages wait, and how operators list and re-drive them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bazaar.shared.messaging.envelope import (
    ATTEMPTS_HEADER,
    DEATH_HEADERS,
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
        reason=str(headers.get(PARKED_REASON_HEADER) or _death_reason(headers)),
        parked_at=str(headers.get(PARKED_AT_HEADER, "")),
        attempts=attempts_of(message),
        body=message.body.decode("utf-8", errors="replace"),
    )


def _death_reason(headers: Mapping[str, Any]) -> str:
    """Why the broker itself dead-lettered a message here (its delivery limit), if it did."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], Mapping):
        return ""
    death = deaths[0]
    return (
        f"dead-lettered by the broker: {_text(death.get('reason'))} in {_text(death.get('queue'))}"
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _scan(
    channel: AbstractChannel,
    queue: str,
    take: Callable[[AbstractIncomingMessage], Awaitable[bool]],
) -> None:
    """Show `take` every message of a queue once; those it does not take are put back.

    Put back by publishing a copy (confirmed) and acknowledging the original, never by
    returning it: a quorum queue counts every return against its delivery limit, and
    RabbitMQ 4 has one by default, so an operator listing a queue would wear its messages
    out. Only the messages there at the start are read (the copies join the tail).
    """
    declared = await channel.declare_queue(queue, passive=True)
    count = declared.declaration_result.message_count or 0
    for _ in range(min(count, MAX_SCAN)):
        message = await declared.get(no_ack=False, fail=False)
        if message is None:
            break
        if not await take(message):
            await channel.default_exchange.publish(
                copy_with_headers(message), routing_key=queue, mandatory=True
            )
        await message.ack()


async def list_parked(url: str, consumer_queue: str) -> list[ParkedMessage]:
    """Every message parked for one consumer, oldest first; none spends a delivery."""
    found: list[ParkedMessage] = []

    async def look(message: AbstractIncomingMessage) -> bool:
        found.append(_parked(message))
        return False

    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await _scan(channel, QueueNames(consumer_queue).parking, look)
    return found


async def redrive_parked(
    url: str, consumer_queue: str, message_ids: Collection[str] | None = None
) -> int:
    """Send parked messages (all, or those ids) back to their consumer with fresh attempts."""
    names = QueueNames(consumer_queue)
    moved = 0
    fresh: dict[str, None] = dict.fromkeys(
        (
            ATTEMPTS_HEADER,
            PARKED_REASON_HEADER,
            PARKED_FROM_HEADER,
            PARKED_AT_HEADER,
            *DEATH_HEADERS,
        )
    )
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)

        async def send_back(message: AbstractIncomingMessage) -> bool:
            nonlocal moved
            if message_ids is not None and message.message_id not in message_ids:
                return False
            copy = copy_with_headers(message, **fresh)
            await channel.default_exchange.publish(copy, routing_key=names.main, mandatory=True)
            moved += 1
            return True

        await _scan(channel, names.parking, send_back)
    return moved
