"""The event types the services' code sends and subscribes to are those of events.yaml.

A pragmatic scan of `services/<name>/src`: an event type a service sends is a string literal
of its own prefix (`catalog.…` in catalog), wherever it is written (a constant or the call
that adds it to the outbox); one it receives is named in the `events` of a `Subscription(...)`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("auth", "catalog", "orders")
#: An event type: `<service>.<entity>.<what happened>`.
EVENT_TYPE = re.compile(r"^(auth|catalog|orders)\.[a-z_]+\.[a-z_]+$")


def _string_literals(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text("utf-8"), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def declared_event_types(service: str) -> set[str]:
    """The event types of `service` named in its source: string literals of its own prefix."""
    source = ROOT / "services" / service / "src"
    return {
        literal
        for path in sorted(source.rglob("*.py"))
        for literal in _string_literals(path)
        if EVENT_TYPE.match(literal) and literal.startswith(f"{service}.")
    }


def _subscribed(call: ast.Call) -> list[str]:
    events = call.args[1] if len(call.args) > 1 else None
    events = next((k.value for k in call.keywords if k.arg == "events"), events)
    if not isinstance(events, ast.Tuple | ast.List):
        return ["<events not written as a literal tuple>"]
    return [e.value if isinstance(e, ast.Constant) else "<not a literal>" for e in events.elts]


def consumed_event_types(service: str) -> set[str]:
    """The event types `service` subscribes to: the `events` of its `Subscription(...)` calls."""
    found: set[str] = set()
    for path in sorted((ROOT / "services" / service / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"), filename=str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Subscription":
                found.update(_subscribed(node))
    return found


def _received_by(document: dict[str, Any], service: str) -> set[str]:
    channels = document["channels"]
    return {
        channels[op["channel"]["$ref"].removeprefix("#/channels/")]["address"]
        for op in document["operations"].values()
        if op["action"] == "receive" and service in {t["name"] for t in op["tags"]}
    }


@pytest.mark.parametrize("service", SERVICES)
def test_the_events_a_service_names_in_its_code_are_those_the_document_has_it_send(
    service: str, event_contract: Any
) -> None:
    assert declared_event_types(service) == event_contract.sent_by(service)


@pytest.mark.parametrize("service", SERVICES)
def test_the_events_a_service_subscribes_to_in_its_code_are_those_the_document_has_it_receive(
    service: str, asyncapi_document: dict[str, Any]
) -> None:
    assert consumed_event_types(service) == _received_by(asyncapi_document, service)


def test_the_reasons_an_order_may_be_rejected_for_are_those_orders_has(
    asyncapi_document: dict[str, Any],
) -> None:
    model = pytest.importorskip("bazaar.orders.domain.model")
    schema = asyncapi_document["components"]["schemas"]["OrderRejected"]

    assert set(schema["properties"]["reason"]["enum"]) == {r.value for r in model.RejectReason}
