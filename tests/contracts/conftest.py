"""Contract-test fixtures: the AsyncAPI document of all events, and a checker of emitted events."""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bazaar.shared import migrations
from bazaar.shared.testing.postgres import DatabaseFactory

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "contracts" / "asyncapi" / "events.yaml"
#: The base URI the document's `#/...` references resolve against.
DOCUMENT_URI = "https://bazaar.test/contracts/asyncapi/events.yaml"
#: An event type: `<service>.<entity>.<what happened>`.
EVENT_TYPE = re.compile(r"^(auth|catalog|orders)\.[a-z_]+\.[a-z_]+$")
SERVICES = ("auth", "catalog", "orders")


def _is_utc_date_time(value: object) -> bool:
    if not isinstance(value, str) or "T" not in value or not value.endswith("Z"):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def format_checker() -> FormatChecker:
    """jsonschema's format checks, plus `date-time` (it needs an optional package otherwise)."""
    checker = FormatChecker()
    checker.checks("date-time")(_is_utc_date_time)
    return checker


def resolve_pointer(document: Any, ref: str) -> Any:
    """The part of the document a local `#/a/b` reference names; KeyError if there is none."""
    if not ref.startswith("#/"):
        raise KeyError(f"{ref!r} is not a local reference")
    node = document
    for raw in ref[2:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise KeyError(f"{ref!r}: no {key!r}")
    return node


def follow(document: Any, node: Any) -> Any:
    """`node`, or what it references when it is a Reference Object (followed to the end)."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        node = resolve_pointer(document, node["$ref"])
        seen += 1
        if seen > 20:
            raise KeyError("reference cycle")
    return node


@dataclass(frozen=True)
class EventContract:
    """The document seen as what it promises about each event type."""

    document: dict[str, Any]

    def resolve(self, ref: str) -> Any:
        """The part of the document a local reference names; KeyError if there is none."""
        return resolve_pointer(self.document, ref)

    def deref(self, node: Any) -> Any:
        """`node`, or what it references when it is a Reference Object."""
        return follow(self.document, node)

    def messages(self) -> dict[str, dict[str, Any]]:
        """Every channel's message by event type (the channel address is the routing key)."""
        found: dict[str, dict[str, Any]] = {}
        for channel in self.document["channels"].values():
            for message in channel["messages"].values():
                found[channel["address"]] = self.deref(message)
        return found

    def validator(self, schema_ref: str) -> Draft202012Validator:
        """A validator of the schema at `schema_ref` (a local reference into the document)."""
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
        return Draft202012Validator(
            {"$ref": DOCUMENT_URI + schema_ref},
            registry=registry,
            format_checker=format_checker(),
        )

    def violations(self, event: Any) -> list[str]:
        """What is wrong with one CloudEvent against the document; empty when it conforms."""
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return [f"not a CloudEvent with a type: {event!r}"]
        message = self.messages().get(event["type"])
        if message is None:
            return [f"{event['type']!r} is not an event type of the document"]
        payload_ref = message["payload"]["$ref"]
        problems = [
            f"{'/'.join(map(str, error.absolute_path)) or '(event)'}: {error.message}"
            for error in self.validator(payload_ref).iter_errors(event)
        ]
        subject_field = message.get("x-subject")
        data = event.get("data")
        if isinstance(data, dict) and event.get("subject") != data.get(subject_field):
            problems.append(f"subject is not data.{subject_field}")
        return problems


@pytest.fixture(scope="session")
def asyncapi_document() -> dict[str, Any]:
    """contracts/asyncapi/events.yaml, parsed."""
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text("utf-8"))
    return loaded


@pytest.fixture(scope="session")
def event_contract(asyncapi_document: dict[str, Any]) -> EventContract:
    """The document's promises about each event type."""
    return EventContract(asyncapi_document)


@pytest.fixture(scope="session")
def deref(event_contract: EventContract) -> Callable[[Any], Any]:
    """Follow a Reference Object of the document to what it names (anything else as it is)."""
    return event_contract.deref


@pytest.fixture(scope="session")
def event_violations(event_contract: EventContract) -> Callable[[Any], list[str]]:
    """What is wrong with a CloudEvent against the document (empty when it conforms)."""
    return event_contract.violations


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


@pytest.fixture(scope="session")
def code_event_types() -> dict[str, set[str]]:
    """Per service, the event types its source code names (and so may emit)."""
    return {service: declared_event_types(service) for service in SERVICES}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def orders_database_url(database_factory: DatabaseFactory) -> str:
    """An orders database for this run, migrated to head."""
    # Imported late, so the other services' tests run while orders is still being built.
    orders_cli = pytest.importorskip("bazaar.orders.cli")
    url = await database_factory.create("contracts_orders")
    await asyncio.to_thread(migrations.upgrade, orders_cli.MIGRATIONS_DIR, url)
    return url
