"""A consumer's side of a pact: the pact, its mock provider, its messages to the real consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pact import Pact
from pact.error import MismatchesError

from bazaar.shared.db import Database
from bazaar.shared.messaging import Subscription, decode_event
from bazaar.shared.messaging.consumer import apply_once

#: How long a callback from Pact's threads waits for its work on the event loop.
CALLBACK_SECONDS = 30.0
#: Where the broker's routing key travels in a message pact's metadata.
ROUTING_KEY = "routingKey"


def new_pact(consumer: str, provider: str) -> Pact:
    """A V4 pact between two Bazaar services, with no interaction yet."""
    return Pact(consumer, provider).with_specification("V4")


@contextmanager
def mock_provider(pact: Pact) -> Iterator[str]:
    """Serve `pact`'s HTTP interactions on 127.0.0.1; yield the base URL.

    When the block finishes, it raises pact.error.MismatchesError unless every interaction
    was requested and nothing else was: the consumer does exactly what its contract says.
    When the block raises, that error goes on as it is (the mismatches it caused are only
    logged): the consumer code's own failure is the one to read.
    """
    server = pact.serve(addr="127.0.0.1", raises=False)
    with server:
        yield str(server.url).rstrip("/")
    mismatches = server.mismatches
    if mismatches:
        raise MismatchesError(*mismatches)


async def deliver(
    pact: Pact, consume: Callable[[bytes, Mapping[str, Any]], Coroutine[Any, Any, None]]
) -> None:
    """Hand each message of `pact` to `consume` (body, metadata), as the broker would.

    Raises pact.error.PactVerificationError naming every message `consume` failed on.
    """
    loop = asyncio.get_running_loop()

    def handler(body: str | bytes | None, metadata: dict[str, object]) -> None:
        raw = body.encode() if isinstance(body, str) else (body or b"")
        asyncio.run_coroutine_threadsafe(consume(raw, metadata), loop).result(CALLBACK_SECONDS)

    await asyncio.to_thread(pact.verify, handler, "Async")


async def apply_event(
    body: bytes,
    metadata: Mapping[str, Any],
    *,
    service: str,
    subscriptions: Sequence[Subscription],
    db: Database,
) -> None:
    """Consume one message as `service`'s consumers do, without the broker: decode the
    CloudEvent, give it to each subscription whose queue the broker would route its routing
    key to (`Subscription.receives`: topic bindings), and apply it there once
    (`messaging.consumer.apply_once`: inbox row and handler in one transaction). Raises
    LookupError if no subscription receives it."""
    event = decode_event(body)
    routing_key = str(metadata.get(ROUTING_KEY, ""))
    receiving = [s for s in subscriptions if s.receives(routing_key)]
    if not receiving:
        raise LookupError(f"{service} binds no queue to the routing key {routing_key!r}")
    for subscription in receiving:
        await apply_once(db, subscription.queue_name(service), subscription.handle, event)
