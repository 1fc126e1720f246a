"""contracts/asyncapi/events.yaml: a sound AsyncAPI 3 document of exactly the events we have."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

#: The Events table of API.md: type → (producer, consumers).
API_EVENTS: dict[str, tuple[str, frozenset[str]]] = {
    "auth.user.registered": ("auth", frozenset()),
    "catalog.product.created": ("catalog", frozenset()),
    "catalog.product.updated": ("catalog", frozenset()),
    "catalog.product.deleted": ("catalog", frozenset()),
    "catalog.stock.reserved": ("catalog", frozenset()),
    "catalog.stock.released": ("catalog", frozenset({"orders"})),
    "orders.order.placed": ("orders", frozenset()),
    "orders.order.rejected": ("orders", frozenset()),
    "orders.order.cancelled": ("orders", frozenset({"catalog"})),
}
CLOUDEVENTS_JSON = "application/cloudevents+json"
Deref = Callable[[Any], Any]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _tag(operation: dict[str, Any]) -> str:
    (tag,) = operation["tags"]
    name: str = tag["name"]
    return name


def test_the_document_is_asyncapi_3_with_an_amqp_server(asyncapi_document: dict[str, Any]) -> None:
    assert asyncapi_document["asyncapi"] == "3.0.0"
    assert asyncapi_document["info"]["title"] and asyncapi_document["info"]["version"]
    assert asyncapi_document["defaultContentType"] == CLOUDEVENTS_JSON
    servers = asyncapi_document["servers"].values()
    assert servers and all(s["protocol"] == "amqp" and s["host"] for s in servers)
    assert set(asyncapi_document) <= {
        "asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations",
        "components",
    }  # fmt: skip


def test_every_reference_in_the_document_resolves(
    asyncapi_document: dict[str, Any], event_contract: Any
) -> None:
    refs = list(_refs(asyncapi_document))
    assert len(refs) > 100
    unresolved = []
    for ref in refs:
        try:
            event_contract.resolve(ref)
        except (KeyError, ValueError, IndexError):
            unresolved.append(ref)
    assert not [r for r in refs if not r.startswith("#/")], "only local references"
    assert unresolved == []


def test_the_event_types_are_exactly_those_of_api_md(
    asyncapi_document: dict[str, Any], deref: Deref
) -> None:
    channels = asyncapi_document["channels"].values()
    addresses = [c["address"] for c in channels]
    names = [deref(m)["name"] for c in channels for m in c["messages"].values()]

    assert sorted(addresses) == sorted(API_EVENTS)
    assert sorted(names) == sorted(API_EVENTS)


def test_each_channel_is_one_routing_key_on_the_bazaar_events_topic_exchange(
    asyncapi_document: dict[str, Any],
    deref: Deref,
) -> None:
    for channel_id, channel in asyncapi_document["channels"].items():
        amqp = deref(channel["bindings"])["amqp"]
        assert amqp["is"] == "routingKey", channel_id
        assert amqp["exchange"] == {
            "name": "bazaar.events",
            "type": "topic",
            "durable": True,
            "autoDelete": False,
            "vhost": "/",
        }
        assert amqp["bindingVersion"] == "0.3.0"
        for server in channel["servers"]:
            assert server["$ref"].startswith("#/servers/")
        (message,) = channel["messages"].values()
        assert deref(message)["name"] == channel["address"]


def test_each_message_is_a_cloudevent_whose_type_is_its_routing_key(
    asyncapi_document: dict[str, Any],
    deref: Deref,
) -> None:
    for channel in asyncapi_document["channels"].values():
        (message,) = (deref(m) for m in channel["messages"].values())
        payload = deref(message["payload"])
        producer = channel["address"].split(".")[0]

        assert message["contentType"] == CLOUDEVENTS_JSON
        assert payload["additionalProperties"] is False
        assert set(payload["required"]) == {
            "specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data",
        }  # fmt: skip
        assert set(payload["properties"]) == {*payload["required"], "traceparent"}
        assert payload["properties"]["type"]["const"] == channel["address"]
        assert payload["properties"]["source"]["const"] == f"/bazaar/{producer}"
        assert message["x-subject"] in deref(payload["properties"]["data"])["properties"]
        assert message["examples"], f"{channel['address']} has no example"
        assert message["bindings"]["amqp"]["messageType"] == channel["address"]
        assert deref(message["headers"])["type"] == "object"


def test_each_event_is_sent_by_its_producer_and_received_by_its_consumers(
    asyncapi_document: dict[str, Any],
    deref: Deref,
) -> None:
    channels = asyncapi_document["channels"]
    sent: dict[str, list[str]] = {}
    received: dict[str, set[str]] = {}
    for operation_id, operation in asyncapi_document["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/"), operation_id
        channel_id = channel_ref.removeprefix("#/channels/")
        address = channels[channel_id]["address"]
        # AsyncAPI 3: an operation's messages are a subset of its channel's.
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), operation_id
        binding = deref(operation["bindings"])["amqp"]
        assert binding["bindingVersion"] == "0.3.0"
        if operation["action"] == "send":
            sent.setdefault(address, []).append(_tag(operation))
            assert binding["deliveryMode"] == 2, "events are persistent"
        else:
            assert operation["action"] == "receive", operation_id
            received.setdefault(address, set()).add(_tag(operation))
            assert binding["ack"] is True

    assert sent == {t: [producer] for t, (producer, _) in API_EVENTS.items()}
    assert received == {t: consumers for t, (_, consumers) in API_EVENTS.items() if consumers}


@pytest.mark.parametrize("dialect", [Draft202012Validator, Draft7Validator])
def test_every_schema_is_a_valid_json_schema(
    asyncapi_document: dict[str, Any], deref: Deref, dialect: type[Draft202012Validator]
) -> None:
    schemas = asyncapi_document["components"]["schemas"]
    payloads = [
        deref(deref(m)["payload"])
        for c in asyncapi_document["channels"].values()
        for m in c["messages"].values()
    ]
    assert len(schemas) > len(API_EVENTS)
    for schema in [*schemas.values(), *payloads]:
        dialect.check_schema(schema)


def test_every_example_in_the_document_conforms(
    asyncapi_document: dict[str, Any], event_violations: Callable[[Any], list[str]]
) -> None:
    examples = [
        example["payload"]
        for message in asyncapi_document["components"]["messages"].values()
        for example in message["examples"]
    ]
    assert {e["type"] for e in examples} == set(API_EVENTS)
    assert {e["id"]: event_violations(e) for e in examples} == {e["id"]: [] for e in examples}


def _example(document: dict[str, Any], message: str) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(
        document["components"]["messages"][message]["examples"][0]["payload"]
    )
    return event


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(event: dict[str, Any]) -> None:
        node: Any = event
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(event: dict[str, Any]) -> None:
        node: Any = event
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return change


UPPER_CASE_UUID = "0F5EE755-E405-459D-8BEF-D25B9C13DDAD"
OTHER_UUID = "22b1cccc-5a78-4a4e-af2a-6a6a667712c9"
DRIFTS = {
    "a missing data field": ("userRegistered", _drop("data.email")),
    "an unknown data field": ("userRegistered", _set("data.roles", ["customer"])),
    "an unknown envelope attribute": ("productDeleted", _set("partitionkey", "x")),
    "a missing envelope attribute": ("productDeleted", _drop("time")),
    "another spec version": ("productDeleted", _set("specversion", "0.3")),
    "another service as source": ("productDeleted", _set("source", "/bazaar/orders")),
    "a time that is not UTC": ("productCreated", _set("time", "2026-11-21T12:00:00+02:00")),
    "a time that is no date": ("productCreated", _set("data.created_at", "2026-13-40T25:00:00Z")),
    "an id that is no UUID": ("productCreated", _set("id", "not-a-uuid")),
    "an upper-case UUID": ("productCreated", _set("data.id", UPPER_CASE_UUID)),
    "a subject that is not the entity": ("productCreated", _set("subject", OTHER_UUID)),
    "a price as a string": ("productCreated", _set("data.price_cents", "1250")),
    "negative stock": ("productCreated", _set("data.stock", -1)),
    "a lower-case currency": ("productCreated", _set("data.currency", "eur")),
    "an unpatchable field in changed": ("productUpdated", _set("data.changed", ["sku"])),
    "nothing in changed": ("productUpdated", _set("data.changed", [])),
    "updated without changed": ("productUpdated", _drop("data.changed")),
    "a reservation with no lines": ("stockReserved", _set("data.lines", [])),
    "a zero quantity": ("stockReserved", _set("data.lines.0.quantity", 0)),
    "a broken traceparent": ("stockReserved", _set("traceparent", "00-abc-def-01")),
    "an unknown event type": ("stockReleased", _set("type", "catalog.stock.moved")),
    "a placed order that is pending": ("orderPlaced", _set("data.status", "pending")),
    "an order line without a price": ("orderPlaced", _drop("data.lines.0.unit_price_cents")),
    "a rejection without a reason": ("orderRejected", _drop("data.reason")),
    "an unknown rejection reason": ("orderRejected", _set("data.reason", "because")),
    "a cancellation without its reservation": ("orderCancelled", _drop("data.reservation_id")),
}  # fmt: skip


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_the_document_refuses_an_event_with(
    drift: str,
    asyncapi_document: dict[str, Any],
    event_violations: Callable[[Any], list[str]],
) -> None:
    message, change = DRIFTS[drift]
    event = _example(asyncapi_document, message)
    assert event_violations(event) == []

    change(event)

    assert event_violations(event) != []
