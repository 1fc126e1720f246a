"""The contract gate (scripts/contracts_check.py): each kind of breaking change to the real
documents is caught, with one line naming it; additions and equivalent spellings pass; the
current documents pass against the last release."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"

sys.path.insert(0, str(SCRIPTS))
try:
    import contracts_check
    from bazaar_contracts import compare, read_directory, read_revision, resolve_base
    from bazaar_contracts.source import VERSION, newest_baseline
finally:
    sys.path.remove(str(SCRIPTS))

Documents = dict[str, Any]
ORDERS, CATALOG, EVENTS = "openapi/orders.json", "openapi/catalog.json", "asyncapi/events.yaml"
CURRENT: Documents = read_directory(REPO / "contracts")


def _lines(old: Documents, new: Documents) -> list[str]:
    return sorted({str(b) for b in compare(old, new).breaks})


def _altered(change: Callable[[Documents], object]) -> list[str]:
    """The gate's lines for the current documents against a copy altered by `change`."""
    new = copy.deepcopy(CURRENT)
    change(new)
    return _lines(CURRENT, new)


def _schemas(documents: Documents, name: str) -> dict[str, Any]:
    schemas: dict[str, Any] = documents[name]["components"]["schemas"]
    return schemas


def _operation(documents: Documents, name: str, path: str, method: str) -> dict[str, Any]:
    operation: dict[str, Any] = documents[name]["paths"][path][method]
    return operation


def _drop_required(schema: dict[str, Any], field: str) -> None:
    schema["required"] = [name for name in schema["required"] if name != field]


# --- each kind of break -------------------------------------------------------------------


def test_a_removed_path_is_breaking() -> None:
    def remove(docs: Documents) -> None:
        del docs[ORDERS]["paths"]["/v1/orders/{order_id}/cancel"]

    assert _altered(remove) == ["BREAKING orders.json: POST /v1/orders/{order_id}/cancel removed"]


def test_a_removed_operation_is_breaking_in_the_service_and_the_gateway() -> None:
    def remove(docs: Documents) -> None:
        for name in (CATALOG, "openapi/gateway.json"):
            del docs[name]["paths"]["/v1/products/{product_id}"]["delete"]

    assert _altered(remove) == [
        "BREAKING catalog.json: DELETE /v1/products/{product_id} removed",
        "BREAKING gateway.json: DELETE /v1/products/{product_id} removed",
    ]


def test_a_removed_response_field_is_breaking_wherever_it_is_answered() -> None:
    def remove(docs: Documents) -> None:
        order = _schemas(docs, ORDERS)["OrderRead"]
        del order["properties"]["status"]
        _drop_required(order, "status")

    lines = _altered(remove)
    assert "BREAKING orders.json: GET /v1/orders/{order_id} response 200 field status removed" in (
        lines
    )
    assert "BREAKING orders.json: GET /v1/orders response 200 field items[].status removed" in lines
    assert "BREAKING orders.json: POST /v1/orders response 202 field status removed" in lines
    assert len(lines) == 5  # the list, the order, both answers of a placement, the cancel


def test_a_response_field_made_optional_or_nullable_is_breaking() -> None:
    def loosen(docs: Documents) -> None:
        order = _schemas(docs, ORDERS)["OrderRead"]
        _drop_required(order, "created_at")
        order["properties"]["customer_id"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}

    lines = [line for line in _altered(loosen) if "GET /v1/orders/{order_id} " in line]
    assert lines == [
        "BREAKING orders.json: GET /v1/orders/{order_id} response 200 field created_at made "
        "optional",
        "BREAKING orders.json: GET /v1/orders/{order_id} response 200 field customer_id can now "
        "be null",
    ]


def test_a_removed_status_code_is_breaking() -> None:
    def remove(docs: Documents) -> None:
        del _operation(docs, ORDERS, "/v1/orders", "post")["responses"]["202"]

    assert _altered(remove) == ["BREAKING orders.json: POST /v1/orders response 202 removed"]


def test_a_new_required_request_field_is_breaking() -> None:
    def add(docs: Documents) -> None:
        create = _schemas(docs, ORDERS)["OrderCreate"]
        create["properties"]["note"] = {"type": "string"}
        create["required"].append("note")

    assert _altered(add) == [
        "BREAKING orders.json: POST /v1/orders request body field note added as required"
    ]


def test_a_request_field_made_required_or_removed_is_breaking() -> None:
    def change(docs: Documents) -> None:
        update = _schemas(docs, CATALOG)["ProductUpdate"]
        update["required"] = ["name"]
        del update["properties"]["stock"]

    assert _altered(change) == [
        "BREAKING catalog.json: PATCH /v1/products/{product_id} request body field name made "
        "required",
        "BREAKING catalog.json: PATCH /v1/products/{product_id} request body field stock removed",
    ]


def test_a_request_body_that_refuses_undeclared_fields_is_breaking() -> None:
    def close(docs: Documents) -> None:
        token = _operation(docs, "openapi/auth.json", "/v1/auth/token", "post")
        form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
        form["additionalProperties"] = False

    assert _altered(close) == [
        "BREAKING auth.json: POST /v1/auth/token request body no longer accepts undeclared fields"
    ]


def test_a_narrowed_request_type_or_bound_is_breaking() -> None:
    def narrow(docs: Documents) -> None:
        update = _schemas(docs, CATALOG)["ProductUpdate"]["properties"]
        update["description"] = {"maxLength": 5000, "type": "string"}
        update["name"]["anyOf"][0]["maxLength"] = 100
        line = _schemas(docs, ORDERS)["OrderLineCreate"]["properties"]
        line["quantity"]["type"] = "string"

    assert _altered(narrow) == [
        "BREAKING catalog.json: PATCH /v1/products/{product_id} request body field description "
        "no longer accepts null",
        "BREAKING catalog.json: PATCH /v1/products/{product_id} request body field name "
        "maxLength tightened: 200 -> 100",
        "BREAKING orders.json: POST /v1/orders request body field lines[].quantity type changed: "
        "integer -> string",
    ]


def test_a_narrowed_enum_in_a_request_is_breaking_and_in_a_response_is_not() -> None:
    def narrow(docs: Documents) -> None:
        _schemas(docs, ORDERS)["OrderStatus"]["enum"].remove("cancelled")

    # OrderStatus is both the `status` filter clients send and the status orders answer.
    assert _altered(narrow) == [
        'BREAKING orders.json: GET /v1/orders parameter query status enum value "cancelled" removed'
    ]


def test_a_new_enum_value_in_a_response_is_breaking() -> None:
    """The documents close their enums: clients switch over the values they were given."""

    def widen(docs: Documents) -> None:
        _schemas(docs, ORDERS)["OrderStatus"]["enum"].append("shipped")

    lines = _altered(widen)
    assert (
        "BREAKING orders.json: GET /v1/orders/{order_id} response 200 field status enum value "
        '"shipped" added'
    ) in lines
    assert all("response" in line for line in lines)  # the filter may accept more values


def test_new_required_and_tightened_parameters_are_breaking() -> None:
    def change(docs: Documents) -> None:
        listing = _operation(docs, CATALOG, "/v1/products", "get")
        listing["parameters"].append(
            {"in": "query", "name": "region", "required": True, "schema": {"type": "string"}}
        )
        limit = next(p for p in listing["parameters"] if p["name"] == "limit")
        limit["schema"]["maximum"] = 50
        cursor = next(p for p in listing["parameters"] if p["name"] == "cursor")
        cursor["required"] = True

    assert _altered(change) == [
        "BREAKING catalog.json: GET /v1/products parameter query cursor made required",
        "BREAKING catalog.json: GET /v1/products parameter query limit maximum tightened: "
        "100 -> 50",
        "BREAKING catalog.json: GET /v1/products parameter query region added as required",
    ]


def test_a_removed_parameter_is_breaking() -> None:
    def remove(docs: Documents) -> None:
        listing = _operation(docs, ORDERS, "/v1/orders", "get")
        listing["parameters"] = [p for p in listing["parameters"] if p["name"] != "customer_id"]

    assert _altered(remove) == [
        "BREAKING orders.json: GET /v1/orders parameter query customer_id removed"
    ]


def test_a_public_operation_that_needs_a_token_is_breaking() -> None:
    def secure(docs: Documents) -> None:
        listing = _operation(docs, CATALOG, "/v1/products", "get")
        listing["security"] = [{"bearerAuth": ["catalog:read"]}]

    assert _altered(secure) == [
        "BREAKING catalog.json: GET /v1/products security tightened: bearerAuth [catalog:read] "
        "(was no authentication)"
    ]


def test_a_removed_event_type_is_breaking() -> None:
    def remove(docs: Documents) -> None:
        events = docs[EVENTS]
        del events["channels"]["ordersOrderCancelled"]
        for name in ("sendOrderCancelled", "receiveOrderCancelled"):
            del events["operations"][name]

    assert _altered(remove) == ["BREAKING events.yaml: event orders.order.cancelled removed"]


def test_an_event_type_no_longer_sent_is_breaking() -> None:
    def silence(docs: Documents) -> None:
        del docs[EVENTS]["operations"]["sendUserRegistered"]

    assert _altered(silence) == ["BREAKING events.yaml: event auth.user.registered no longer sent"]


def test_a_removed_event_data_field_is_breaking() -> None:
    def remove(docs: Documents) -> None:
        cancelled = _schemas(docs, EVENTS)["OrderCancelled"]
        del cancelled["properties"]["reservation_id"]
        _drop_required(cancelled, "reservation_id")

    assert _altered(remove) == [
        "BREAKING events.yaml: event orders.order.cancelled payload field data.reservation_id "
        "removed"
    ]


def test_event_fields_made_optional_retyped_or_given_new_values_are_breaking() -> None:
    def change(docs: Documents) -> None:
        schemas = _schemas(docs, EVENTS)
        _drop_required(schemas["Reservation"], "order_id")
        schemas["Quantity"] = {"type": "number", "minimum": 1}
        schemas["OrderRejected"]["properties"]["reason"]["enum"].append("payment-failed")

    assert _altered(change) == [
        "BREAKING events.yaml: event catalog.stock.released payload field data.lines[].quantity "
        "type widened: integer -> number",
        "BREAKING events.yaml: event catalog.stock.released payload field data.order_id made "
        "optional",
        "BREAKING events.yaml: event catalog.stock.reserved payload field data.lines[].quantity "
        "type widened: integer -> number",
        "BREAKING events.yaml: event catalog.stock.reserved payload field data.order_id made "
        "optional",
        "BREAKING events.yaml: event orders.order.placed payload field data.lines[].quantity "
        "type widened: integer -> number",
        "BREAKING events.yaml: event orders.order.rejected payload field data.reason enum value "
        '"payment-failed" added',
    ]


def test_an_event_moved_to_another_exchange_or_content_type_is_breaking() -> None:
    def move(docs: Documents) -> None:
        events = docs[EVENTS]
        channel = events["channels"]["catalogStockReleased"]
        binding = events["components"]["channelBindings"]["bazaarEvents"]
        channel["bindings"] = {"amqp": copy.deepcopy(binding["amqp"])}
        channel["bindings"]["amqp"]["exchange"]["name"] = "catalog.events"
        events["components"]["messages"]["orderPlaced"]["contentType"] = "application/json"

    assert _altered(move) == [
        "BREAKING events.yaml: event catalog.stock.released exchange changed: bazaar.events "
        "(topic) -> catalog.events (topic)",
        "BREAKING events.yaml: event orders.order.placed content type changed: "
        "application/cloudevents+json -> application/json",
    ]


def test_a_removed_document_is_breaking() -> None:
    assert _altered(lambda docs: docs.pop("openapi/auth.json")) == [
        "BREAKING auth.json: document removed"
    ]


# --- what passes ------------------------------------------------------------------------


def test_additions_pass() -> None:
    def add(docs: Documents) -> None:
        orders = docs[ORDERS]
        orders["paths"]["/v1/orders/{order_id}/lines"] = {
            "get": {"responses": {"200": {"description": "The lines."}}}
        }
        schemas = _schemas(docs, ORDERS)
        schemas["OrderRead"]["properties"]["channel"] = {"type": "string"}
        schemas["OrderRead"]["required"].append("channel")
        schemas["OrderCreate"]["properties"]["note"] = {"type": "string"}
        schemas["OrderStatus"]["enum"] = [*schemas["OrderStatus"]["enum"]]
        _operation(docs, ORDERS, "/v1/orders", "get")["parameters"].append(
            {"in": "query", "name": "since", "required": False, "schema": {"type": "string"}}
        )
        _operation(docs, ORDERS, "/v1/orders", "post")["responses"]["429"] = {
            "description": "Too many requests"
        }
        limit = _schemas(docs, CATALOG)["ProductUpdate"]["properties"]["name"]["anyOf"][0]
        limit["maxLength"] = 400  # a request bound loosened
        events = docs[EVENTS]
        events["channels"]["ordersOrderShipped"] = copy.deepcopy(
            events["channels"]["ordersOrderPlaced"]
        )
        events["channels"]["ordersOrderShipped"]["address"] = "orders.order.shipped"
        data = _schemas(docs, EVENTS)["OrderCancelled"]
        data["properties"]["reason"] = {"type": "string"}
        data["required"].append("reason")

    assert _altered(add) == []


def test_a_request_enum_that_grows_passes() -> None:
    def grow(docs: Documents) -> None:
        listing = _operation(docs, ORDERS, "/v1/orders", "get")
        status = next(p for p in listing["parameters"] if p["name"] == "status")
        status["schema"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}

    assert _altered(grow) == []


def _inlined(node: Any, document: Any) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = document
            for key in node["$ref"][2:].split("/"):
                target = target[key]
            if not node["$ref"].startswith("#/components/schemas/"):
                return _inlined(target, document)  # a channel, message, binding: as it is
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return {"allOf": [_inlined(target, document)], **_inlined(siblings, document)}
        return {k: _inlined(v, document) for k, v in node.items()}
    if isinstance(node, list):
        return [_inlined(item, document) for item in node]
    return node


def test_references_and_all_of_are_followed_so_an_inlined_copy_passes() -> None:
    """Every schema $ref replaced by `allOf: [the target]` (pydantic 1's spelling), every
    other one by its target: nothing breaks either way."""
    inlined = {name: _inlined(doc, doc) for name, doc in CURRENT.items()}
    assert json.dumps(inlined).count('"$ref"') == 0
    assert _lines(CURRENT, inlined) == []
    assert _lines(inlined, CURRENT) == []


def test_a_break_behind_all_of_is_found() -> None:
    inlined = {name: _inlined(doc, doc) for name, doc in CURRENT.items()}
    changed = copy.deepcopy(inlined)
    order = changed[ORDERS]["paths"]["/v1/orders/{order_id}"]["get"]["responses"]["200"]
    schema = order["content"]["application/json"]["schema"]["allOf"][0]
    del schema["properties"]["total_cents"]
    assert _lines(inlined, changed) == [
        "BREAKING orders.json: GET /v1/orders/{order_id} response 200 field total_cents removed"
    ]


def test_renamed_path_parameters_and_header_case_pass() -> None:
    def rename(docs: Documents) -> None:
        paths = docs[ORDERS]["paths"]
        item = paths.pop("/v1/orders/{order_id}")
        for parameter in item["get"]["parameters"]:
            if parameter["name"] == "order_id":
                parameter["name"] = "id"
        paths["/v1/orders/{id}"] = item
        for parameter in _operation(docs, ORDERS, "/v1/orders", "post")["parameters"]:
            parameter["name"] = parameter["name"].lower()

    assert _altered(rename) == []


# --- the gate as make runs it -------------------------------------------------------------


def test_the_current_documents_pass_against_the_last_release() -> None:
    base = resolve_base(REPO)
    assert base.documents.keys() == CURRENT.keys()
    assert _lines(base.documents, CURRENT) == [], f"against {base.label}"


def _tags() -> list[str]:
    done = subprocess.run(
        ["git", "-C", str(REPO), "tag", "--list", "v*"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_every_release_baseline_is_what_its_tag_holds() -> None:
    baselines = sorted(p for p in (REPO / "contracts" / "released").glob("v*") if p.is_dir())
    assert baselines, "no baseline under contracts/released/: cut a release"
    assert all(VERSION.match(p.name) for p in baselines)
    tagged = [p for p in baselines if p.name in _tags()]
    if not tagged:
        pytest.skip("no release tag in this clone (CI may clone without tags)")
    for baseline in tagged:
        assert read_directory(baseline) == read_revision(REPO, baseline.name), baseline.name


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A copy of the repository's contracts/ (current documents and baselines), no git."""
    shutil.copytree(REPO / "contracts", tmp_path / "contracts")
    yield tmp_path


def test_without_a_tag_the_gate_falls_back_to_the_newest_baseline(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contracts_check.main(["--release", "v0.0.9"], repo=project)  # an older release
    orders = project / "contracts" / ORDERS
    document = json.loads(orders.read_text())
    del document["paths"]["/v1/orders"]["post"]
    orders.write_text(json.dumps(document))
    capsys.readouterr()

    assert contracts_check.main([], repo=project) == 1
    out = capsys.readouterr().out.splitlines()
    newest = newest_baseline(project)
    assert newest is not None and newest.name != "v0.0.9"
    assert out[0] == "BREAKING orders.json: POST /v1/orders removed"
    assert out[1].startswith(
        f"contracts-check: 1 breaking change against {newest.name} (no release tag in this "
        f"clone: committed baseline contracts/released/{newest.name}); "
    )
    assert len(out) == 2


def test_the_release_command_writes_the_baseline_and_refuses_other_names(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert contracts_check.main(["--release", "v9.0.0"], repo=project) == 0
    assert read_directory(project / "contracts" / "released" / "v9.0.0") == CURRENT
    assert newest_baseline(project) == project / "contracts" / "released" / "v9.0.0"
    assert contracts_check.main(["--release", "9.1"], repo=project) == 2
    assert "not a release version" in capsys.readouterr().err


def test_a_tagged_clone_is_checked_against_its_latest_tag(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "0")
    git("add", "contracts")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "release")
    git("tag", "v7.0.0")
    events = project / "contracts" / EVENTS
    events.write_text(events.read_text().replace("address: orders.order.rejected", "address: x"))

    assert contracts_check.main([], repo=project) == 1
    out = capsys.readouterr().out
    assert "BREAKING events.yaml: event orders.order.rejected removed\n" in out
    assert "against v7.0.0 (latest release tag)" in out
    # A baseline is what the tag will hold: not written from uncommitted documents.
    assert contracts_check.main(["--release", "v7.1.0"], repo=project) == 2
    err = capsys.readouterr().err
    assert "commit the contracts first: contracts/asyncapi/events.yaml differ" in err
    assert not (project / "contracts" / "released" / "v7.1.0").exists()
