"""What a change to an AsyncAPI 3 document breaks for the consumers of its events.

An event type is a channel's address (the routing key). Its consumers read every message of
it, so its payload and headers are compared as READ schemas: a data field removed, made
optional or retyped breaks them. A channel gone, no longer sent, moved to another exchange or
sent with another content type breaks them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .change import Break, changes
from .schema import Direction, Resolver


@dataclass(frozen=True)
class Event:
    """One event type: its channel and its messages by name."""

    channel: dict[str, Any]
    messages: dict[str, dict[str, Any]]


def events(document: dict[str, Any]) -> dict[str, Event]:
    """Every event type of the document (its channels, by address)."""
    if not str(document.get("asyncapi", "")).startswith("3."):
        raise ValueError(f"AsyncAPI 3 documents only (this one says {document.get('asyncapi')})")
    resolver = Resolver(document)
    found: dict[str, Event] = {}
    for key, raw in (document.get("channels") or {}).items():
        channel = resolver.deref(raw)
        messages = {}
        for message_key, message in (channel.get("messages") or {}).items():
            message = resolver.deref(message)
            messages[str(message.get("name", message_key))] = message
        found[str(channel.get("address") or key)] = Event(channel, messages)
    return found


def sent(document: dict[str, Any]) -> set[str]:
    """The event types some `send` operation of the document publishes."""
    resolver = Resolver(document)
    operations = [resolver.deref(op) for op in (document.get("operations") or {}).values()]
    channels = [resolver.deref(op["channel"]) for op in operations if op.get("action") == "send"]
    return {str(channel.get("address")) for channel in channels}


def _exchange(resolver: Resolver, channel: dict[str, Any]) -> tuple[str, str]:
    bindings = resolver.deref(channel.get("bindings") or {})
    exchange = (bindings.get("amqp") or {}).get("exchange") or {}
    return str(exchange.get("name")), str(exchange.get("type"))


def _message_changes(
    resolvers: tuple[Resolver, Resolver], a: dict[str, Any], b: dict[str, Any], label: str
) -> Iterator[str]:
    old, new = resolvers
    default = old.document.get("defaultContentType"), new.document.get("defaultContentType")
    content = a.get("contentType", default[0]), b.get("contentType", default[1])
    if content[0] != content[1]:
        yield f"{label}content type changed: {content[0]} -> {content[1]}"
    for part in ("payload", "headers"):
        if part in a:
            for change in changes(old, new, a[part], b.get(part, {}), Direction.READ):
                yield change.describe(f"{label}{part}")


def compare_asyncapi(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Break]:
    """The breaking changes from `old` to `new`, an AsyncAPI document named `name`."""
    resolvers = Resolver(old), Resolver(new)
    after, sent_before, sent_after = events(new), sent(old), sent(new)
    found: list[Break] = []
    for address, event in events(old).items():
        where = f"event {address}"
        if address not in after:
            found.append(Break(name, where, "removed"))
            continue
        now = after[address]
        whats: list[str] = []
        if address in sent_before and address not in sent_after:
            whats.append("no longer sent")
        exchanges = _exchange(resolvers[0], event.channel), _exchange(resolvers[1], now.channel)
        if exchanges[0] != exchanges[1]:
            was, now_at = (f"{n} ({kind})" for n, kind in exchanges)
            whats.append(f"exchange changed: {was} -> {now_at}")
        for message_name, message in event.messages.items():
            label = f"message {message_name} " if len(event.messages) > 1 else ""
            if message_name not in now.messages:
                whats.append(f"message {message_name} removed")
            else:
                whats += _message_changes(resolvers, message, now.messages[message_name], label)
        found += [Break(name, where, what) for what in whats]
    return found
