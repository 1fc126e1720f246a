"""Contract-test fixtures: the AsyncAPI document of all events, and a checker of emitted events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import SecretStr
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bazaar.auth.config import AuthSettings, ClientConfig
from bazaar.shared import migrations
from bazaar.shared.testing.postgres import DatabaseFactory

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "contracts" / "asyncapi" / "events.yaml"
#: The base URI the document's `#/...` references resolve against.
DOCUMENT_URI = "https://bazaar.test/contracts/asyncapi/events.yaml"
#: The auth service of these tests: its issuer, bootstrap admin and the orders client's secret.
ISSUER = "http://gateway.contracts.test"
ADMIN = ("admin@contracts.test", "contracts-admin-password")
ORDERS_SECRET = "contracts-orders-client-secret"


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

    def sent_by(self, service: str) -> set[str]:
        """The event types the document has `service` send."""
        return {t for t in self.messages() if t.startswith(f"{service}.")}


@dataclass(frozen=True)
class OutboxContents:
    """The rows of one service's outbox, and what is wrong with each nonconforming one."""

    rows: list[dict[str, Any]]
    problems: dict[str, list[str]]

    @property
    def types(self) -> set[str]:
        """The event types written."""
        return {row["type"] for row in self.rows}

    def events(self, type: str) -> list[dict[str, Any]]:
        """The events of one type, oldest first."""
        return [row["event"] for row in self.rows if row["type"] == type]


def _row_problems(row: dict[str, Any], contract: EventContract) -> list[str]:
    event = row["event"]
    problems = contract.violations(event)
    if isinstance(event, dict):
        columns = {"type": row["type"], "subject": row["subject"]}
        if row["traceparent"] is not None:
            columns["traceparent"] = row["traceparent"]
        problems += [
            f"the row's {k} is not the event's" for k, v in columns.items() if event.get(k) != v
        ]
    return problems


async def read_outbox(url: str, contract: EventContract) -> OutboxContents:
    """Every row of a service's outbox, checked against the document and its own columns."""
    conn = await asyncpg.connect(url)
    try:
        records = await conn.fetch(
            "SELECT type, subject, traceparent, event::text AS event FROM outbox ORDER BY position"
        )
    finally:
        await conn.close()
    rows = [{**dict(r), "event": json.loads(r["event"])} for r in records]
    problems = {
        f"{row['type']} #{number}": found
        for number, row in enumerate(rows)
        if (found := _row_problems(row, contract))
    }
    return OutboxContents(rows, problems)


@pytest.fixture(scope="session")
def outbox_of(event_contract: EventContract) -> Callable[[str], Awaitable[OutboxContents]]:
    """Read a service's outbox (by database URL) and check every event in it."""
    return lambda url: read_outbox(url, event_contract)


@pytest.fixture
def new_trace() -> Callable[[], tuple[str, dict[str, str]]]:
    """A fresh trace id, and the `traceparent` header that continues it."""

    def trace() -> tuple[str, dict[str, str]]:
        trace_id = uuid.uuid4().hex
        return trace_id, {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}

    return trace


@pytest.fixture
def contracts_auth_settings(system_databases: dict[str, str]) -> AuthSettings:
    """Auth over the run's system database, with a known admin and the orders client."""
    return AuthSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=system_databases["auth"],
        jwt_issuer=ISSUER,
        admin_email=ADMIN[0],
        admin_password=SecretStr(ADMIN[1]),
        clients=(
            ClientConfig(
                client_id="orders", secret=SecretStr(ORDERS_SECRET), scopes=("catalog:reserve",)
            ),
        ),
    )


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


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def orders_database_url(database_factory: DatabaseFactory) -> str:
    """An orders database for this run, migrated to head."""
    # Imported late, so the other services' tests run while orders is still being built.
    orders_cli = pytest.importorskip("bazaar.orders.cli")
    url = await database_factory.create("contracts_orders")
    await asyncio.to_thread(migrations.upgrade, orders_cli.MIGRATIONS_DIR, url)
    return url
