"""merge_openapi: the committed contracts of auth and catalog, and synthetic conflicts."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bazaar.gateway.docs import merge_openapi
from bazaar.gateway.docs.merge import HTTP_METHODS, safe_component_name

CONTRACTS = Path(__file__).resolve().parents[3] / "contracts" / "openapi"
INTERNAL = "/v1/reservations"
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def load_contracts() -> dict[str, dict[str, Any]]:
    return {
        name: json.loads((CONTRACTS / f"{name}.json").read_text(encoding="utf-8"))
        for name in ("auth", "catalog")
    }


@pytest.fixture(scope="module")
def contracts() -> dict[str, dict[str, Any]]:
    return load_contracts()


@pytest.fixture(scope="module")
def merged(contracts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return merge_openapi(contracts, title="Bazaar", version="1.2.3")


# --- structural invariants (no openapi-spec-validator here) -------------------------------


def refs(node: Any) -> Iterator[str]:
    """Every $ref and discriminator mapping target under node."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        mapping = (
            node.get("discriminator", {}).get("mapping", {}) if "discriminator" in node else {}
        )
        yield from (t for t in mapping.values() if isinstance(t, str))
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"non-local $ref {ref!r}"
    node: Any = doc
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"$ref {ref!r} does not resolve"
        node = node[token]
    return node


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc.get("paths", {}).items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def security_names(doc: dict[str, Any]) -> set[str]:
    return {
        name
        for _, _, op in operations(doc)
        for requirement in op.get("security", [])
        for name in requirement
    }


def assert_valid(doc: dict[str, Any], *, excluded: tuple[str, ...] = (INTERNAL,)) -> None:
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["servers"] == [{"url": "/"}]
    for ref in refs(doc):
        resolve(doc, ref)
    for prefix in excluded:
        assert not [p for p in doc["paths"] if p.startswith(prefix)]
    op_ids = [op["operationId"] for _, _, op in operations(doc) if "operationId" in op]
    assert len(op_ids) == len(set(op_ids)), f"duplicate operationId in {sorted(op_ids)}"
    for section, entries in doc.get("components", {}).items():
        for name in entries:
            assert COMPONENT_NAME.match(name), f"invalid component name {section}/{name}"
    schemes = doc.get("components", {}).get("securitySchemes", {})
    assert security_names(doc) <= set(schemes), "a security requirement names no scheme"
    for _, _, op in operations(doc):
        assert "responses" in op
    json.dumps(doc)  # plain JSON, nothing else


# --- the committed contracts ---------------------------------------------------------------


def test_every_public_path_and_operation_is_present(
    contracts: dict[str, dict[str, Any]], merged: dict[str, Any]
) -> None:
    expected = {
        (path, method)
        for doc in contracts.values()
        for path, item in doc["paths"].items()
        if not path.startswith(INTERNAL)
        for method in item
        if method in HTTP_METHODS
    }
    assert {(path, method) for path, method, _ in operations(merged)} == expected
    for path in ("/v1/products/{product_id}", "/v1/auth/token", "/v1/users/me"):
        assert path in merged["paths"]


def test_internal_routes_and_their_schemas_never_appear(merged: dict[str, Any]) -> None:
    text = json.dumps(merged)
    assert INTERNAL not in text
    assert "reservations (internal)" not in text
    assert "catalog:reserve" not in json.dumps(merged["paths"])
    assert not [name for name in merged["components"]["schemas"] if "Reservation" in name]


def test_merged_contracts_are_structurally_valid(merged: dict[str, Any]) -> None:
    assert_valid(merged)
    assert merged["info"]["title"] == "Bazaar"
    assert merged["info"]["version"] == "1.2.3"
    assert "x-bazaar-dropped-operations" not in merged


def test_shared_identical_schemas_are_kept_once(
    contracts: dict[str, dict[str, Any]], merged: dict[str, Any]
) -> None:
    schemas = merged["components"]["schemas"]
    assert (
        contracts["auth"]["components"]["schemas"]["Problem"]
        == (contracts["catalog"]["components"]["schemas"]["Problem"])
    )
    assert schemas["Problem"] == contracts["auth"]["components"]["schemas"]["Problem"]
    assert not [name for name in schemas if "__" in name], "nothing conflicts in the contracts"
    assert merged["components"]["securitySchemes"] == {
        "bearerAuth": contracts["auth"]["components"]["securitySchemes"]["bearerAuth"]
    }
    # Both services' pages are there, each once.
    assert {"Page_UserRead_", "Page_ProductRead_"} <= set(schemas)


def test_operations_keep_their_security_and_refs(
    contracts: dict[str, dict[str, Any]], merged: dict[str, Any]
) -> None:
    for path, method, op in operations(merged):
        service = "catalog" if path.startswith("/v1/products") else "auth"
        assert op == contracts[service]["paths"][path][method], (path, method)


def test_inputs_are_not_changed_and_output_is_deterministic(
    contracts: dict[str, dict[str, Any]],
) -> None:
    before = copy.deepcopy(contracts)
    first = merge_openapi(contracts, title="t", version="v")
    assert contracts == before
    first["paths"].clear()
    assert contracts == before
    assert merge_openapi(contracts, title="t", version="v") == merge_openapi(
        load_contracts(), title="t", version="v"
    )


def test_no_exclusion_keeps_internal_routes(contracts: dict[str, dict[str, Any]]) -> None:
    merged = merge_openapi(contracts, title="t", version="v", exclude_prefixes=())
    assert "/v1/reservations" in merged["paths"]
    assert "ReservationCreate" in merged["components"]["schemas"]
    assert_valid(merged, excluded=())


def test_unreferenced_published_schemas_stay(
    contracts: dict[str, dict[str, Any]], merged: dict[str, Any]
) -> None:
    # OAuthErrorRead is published by auth though no operation refers to it.
    assert "OAuthErrorRead" in contracts["auth"]["components"]["schemas"]
    assert "OAuthErrorRead" in merged["components"]["schemas"]


def test_tags_of_kept_operations_are_unioned() -> None:
    a = doc({"/a": {"get": op("a", tags=["things"])}}, tags=[{"name": "things", "x": 1}])
    b = doc(
        {"/b": {"get": op("b", tags=["things"])}, "/v1/reservations": {"get": op("r", ["int"])}},
        tags=[{"name": "things", "x": 2}, {"name": "int"}],
    )
    merged = merge_openapi({"a": a, "b": b}, title="t", version="v")
    assert merged["tags"] == [{"name": "things", "x": 1}]


# --- synthetic conflicts -------------------------------------------------------------------


def op(op_id: str, tags: list[str] | None = None, ref: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": "ok"}
    if ref is not None:
        response["content"] = {"application/json": {"schema": {"$ref": ref}}}
    out: dict[str, Any] = {"operationId": op_id, "responses": {"200": response}}
    if tags:
        out["tags"] = tags
    return out


def doc(
    paths: dict[str, Any],
    schemas: dict[str, Any] | None = None,
    *,
    tags: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "svc", "version": "0"},
        "paths": paths,
        "components": {"schemas": schemas or {}, **extra.pop("components", {})},
    }
    if tags:
        out["tags"] = tags
    out.update(extra)
    return out


S = "#/components/schemas/"
PROBLEM = {"type": "object", "properties": {"title": {"type": "string"}}}


def conflicting_services() -> dict[str, dict[str, Any]]:
    auth = doc(
        {
            "/v1/users": {
                "get": op("list", ref=S + "Page"),
                "post": {
                    "operationId": "create_user",
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": S + "Item"}}}
                    },
                    "responses": {
                        "201": {"$ref": "#/components/responses/Created"},
                        "default": {"$ref": "#/components/responses/Error"},
                    },
                },
            },
        },
        {
            "Item": {"type": "object", "properties": {"email": {"type": "string"}}},
            "Page": {"type": "object", "properties": {"items": {"items": {"$ref": S + "Item"}}}},
            "Problem": PROBLEM,
            "Pet": {
                "oneOf": [{"$ref": S + "Item"}],
                "discriminator": {"propertyName": "kind", "mapping": {"item": S + "Item"}},
            },
        },
        components={
            "responses": {
                "Created": {
                    "description": "created",
                    "content": {"application/json": {"schema": {"$ref": S + "Pet"}}},
                },
                "Error": {
                    "description": "error",
                    "content": {"application/problem+json": {"schema": {"$ref": S + "Problem"}}},
                },
            },
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        security=[{"bearerAuth": []}],
    )
    catalog = doc(
        {
            "/v1/products": {
                "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}],
                "get": op("list", ref=S + "Page"),
            },
            "/v1/products/{id}": {
                "get": {
                    **op("get_product", ref=S + "Item"),
                    "security": [{"bearerAuth": ["catalog:read"]}],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"application/json": {"schema": {"$ref": S + "Item"}}},
                            "links": {"self": {"operationId": "list"}},
                        },
                        "default": {"$ref": "#/components/responses/Error"},
                    },
                }
            },
            "/v1/reservations": {"post": op("reserve", ref=S + "Reservation")},
        },
        {
            "Item": {"type": "object", "properties": {"sku": {"type": "string"}}},
            "Page": {"type": "object", "properties": {"items": {"items": {"$ref": S + "Item"}}}},
            "Problem": PROBLEM,
            "Reservation": {"type": "object"},
        },
        components={
            "responses": {
                "Error": {
                    "description": "error",
                    "content": {"application/problem+json": {"schema": {"$ref": S + "Problem"}}},
                },
            },
            "securitySchemes": {"bearerAuth": {"type": "apiKey", "in": "header", "name": "X"}},
        },
    )
    return {"auth": auth, "catalog": catalog}


@pytest.fixture
def conflict() -> dict[str, Any]:
    return merge_openapi(conflicting_services(), title="t", version="v")


def test_conflicting_schemas_are_renamed_per_service(conflict: dict[str, Any]) -> None:
    schemas = conflict["components"]["schemas"]
    assert "Item" not in schemas
    assert schemas["auth__Item"]["properties"] == {"email": {"type": "string"}}
    assert schemas["catalog__Item"]["properties"] == {"sku": {"type": "string"}}
    # Page is textually identical but refers to the conflicting Item: renamed too.
    assert "Page" not in schemas
    assert schemas["auth__Page"]["properties"]["items"]["items"]["$ref"] == S + "auth__Item"
    assert schemas["catalog__Page"]["properties"]["items"]["items"]["$ref"] == S + "catalog__Item"
    # Identical and self-contained: once, under its own name.
    assert schemas["Problem"] == PROBLEM
    assert not [n for n in schemas if n.endswith("__Problem")]
    assert conflict["components"]["responses"]["Error"]["description"] == "error"
    # The internal route's schema went with it.
    assert "Reservation" not in json.dumps(conflict)
    assert_valid(conflict)


def test_refs_are_rewritten_in_each_services_part(conflict: dict[str, Any]) -> None:
    paths = conflict["paths"]
    users = paths["/v1/users"]
    assert (
        users["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        == S + "auth__Page"
    )
    assert (
        users["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        == S + "auth__Item"
    )
    product = paths["/v1/products/{id}"]["get"]["responses"]["200"]
    assert product["content"]["application/json"]["schema"]["$ref"] == S + "catalog__Item"
    # Only auth has Pet: it keeps its name, and its refs point to auth's Item.
    pet = conflict["components"]["schemas"]["Pet"]
    assert pet["oneOf"] == [{"$ref": S + "auth__Item"}]
    assert pet["discriminator"]["mapping"] == {"item": S + "auth__Item"}
    created = conflict["components"]["responses"]["Created"]
    assert created["content"]["application/json"]["schema"]["$ref"] == S + "Pet"


def test_conflicting_security_schemes_are_renamed_in_requirements(
    conflict: dict[str, Any],
) -> None:
    schemes = conflict["components"]["securitySchemes"]
    assert set(schemes) == {"auth__bearerAuth", "catalog__bearerAuth"}
    users = conflict["paths"]["/v1/users"]
    # auth's top-level security is pushed down into its operations, renamed.
    assert users["get"]["security"] == [{"auth__bearerAuth": []}]
    assert users["post"]["security"] == [{"auth__bearerAuth": []}]
    product = conflict["paths"]["/v1/products/{id}"]["get"]
    assert product["security"] == [{"catalog__bearerAuth": ["catalog:read"]}]
    assert "security" not in conflict["paths"]["/v1/products"]["get"]
    assert "security" not in conflict


def test_colliding_operation_ids_are_prefixed_with_the_service(conflict: dict[str, Any]) -> None:
    assert conflict["paths"]["/v1/users"]["get"]["operationId"] == "auth__list"
    assert conflict["paths"]["/v1/products"]["get"]["operationId"] == "catalog__list"
    assert conflict["paths"]["/v1/users"]["post"]["operationId"] == "create_user"
    link = conflict["paths"]["/v1/products/{id}"]["get"]["responses"]["200"]["links"]["self"]
    assert link == {"operationId": "catalog__list"}


def test_path_level_parameters_are_pushed_into_operations(conflict: dict[str, Any]) -> None:
    item = conflict["paths"]["/v1/products"]
    assert "parameters" not in item
    assert item["get"]["parameters"] == [{"name": "q", "in": "query", "schema": {"type": "string"}}]


def test_same_operation_in_two_services_first_wins_and_is_reported() -> None:
    a = doc({"/x": {"get": op("a_get"), "servers": [{"url": "http://a:1"}]}})
    b = doc({"/x": {"get": op("b_get"), "post": op("b_post")}})
    merged = merge_openapi({"a": a, "b": b}, title="t", version="v")
    assert merged["paths"]["/x"]["get"]["operationId"] == "a_get"
    assert merged["paths"]["/x"]["post"]["operationId"] == "b_post"
    assert "servers" not in merged["paths"]["/x"]
    assert merged["x-bazaar-dropped-operations"] == ["b GET /x"]
    assert_valid(merged)


def test_renamed_component_never_takes_an_existing_name() -> None:
    a = doc({"/a": {"get": op("a", ref=S + "N")}}, {"N": {"type": "string"}})
    b = doc(
        {"/b": {"get": op("b", ref=S + "N")}, "/c": {"get": op("c", ref=S + "b__N")}},
        {"N": {"type": "integer"}, "b__N": {"type": "boolean"}},
    )
    merged = merge_openapi({"a": a, "b": b}, title="t", version="v")
    schemas = merged["components"]["schemas"]
    assert schemas["b__N"] == {"type": "boolean"}
    assert schemas["a__N"] == {"type": "string"}
    renamed = merged["paths"]["/b"]["get"]["responses"]["200"]["content"]["application/json"]
    assert schemas[renamed["schema"]["$ref"].removeprefix(S)] == {"type": "integer"}
    assert_valid(merged)


def test_one_service_reusing_an_operation_id_is_made_unique() -> None:
    a = doc({"/a": {"get": op("same")}, "/b": {"get": op("same")}})
    merged = merge_openapi({"a": a}, title="t", version="v")
    assert_valid(merged)


def test_service_names_are_made_valid_component_names() -> None:
    assert safe_component_name("my service/v2", "Item") == "my_service_v2__Item"
    a = doc({"/a": {"get": op("a", ref=S + "N")}}, {"N": {"type": "string"}})
    b = doc({"/b": {"get": op("b", ref=S + "N")}}, {"N": {"type": "integer"}})
    merged = merge_openapi({"svc one": a, "svc/two": b}, title="t", version="v")
    assert set(merged["components"]["schemas"]) == {"svc_one__N", "svc_two__N"}
    assert_valid(merged)


def test_no_documents_give_an_empty_valid_document() -> None:
    merged = merge_openapi({}, title="t", version="v")
    assert merged["paths"] == {}
    assert_valid(merged)
