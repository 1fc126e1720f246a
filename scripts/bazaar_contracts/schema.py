"""A JSON Schema seen as the set of values it admits, and what a change to it breaks.

A schema is flattened into alternatives (`anyOf`/`oneOf` members, each the conjunction of
its `allOf` members and `$ref` targets, siblings of a `$ref` included, as FastAPI and
pydantic write them) and summed up as one hull: the types, enum values, properties and
bounds that some alternative admits. Properties required by every object alternative are
required in the hull. Changes are judged from the side that must cope with them: READ for
what the document's owner sends (responses, events), WRITE for what clients send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

#: Keywords whose value grows as the schema narrows, and those whose value shrinks.
LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
#: Keywords a value must match exactly; any new or changed one narrows.
EXACT = ("pattern", "format")
_KINDS: tuple[tuple[frozenset[str], tuple[str, ...]], ...] = (
    (frozenset({"string"}), ("minLength", "maxLength", "pattern", "format")),
    (
        frozenset({"number", "integer"}),
        ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"),
    ),
    (frozenset({"array"}), ("minItems", "maxItems", "uniqueItems")),
    (frozenset({"object"}), ("minProperties", "maxProperties")),
)
#: The types each bound applies to.
_APPLIES_TO = {key: kinds for kinds, keys in _KINDS for key in keys}
_COMBINATORS = frozenset({"$ref", "allOf", "anyOf", "oneOf"})
#: Beyond this many alternatives a schema is taken as admitting anything (no false alarms).
MAX_ALTERNATIVES = 256
MAX_DEPTH = 64


class Direction(Enum):
    """Who must still cope with a schema after it changed."""

    READ = "read"  # the owner sends it (responses, events): its readers must cope
    WRITE = "write"  # clients send it (request bodies, parameters): the owner must accept it


class Resolver:
    """Local `#/...` references of one document."""

    def __init__(self, document: Any) -> None:
        self.document = document

    def resolve(self, ref: str) -> Any:
        """The node a local reference names; KeyError when there is none."""
        if not ref.startswith("#"):
            raise KeyError(f"{ref!r}: only local references are followed")
        node = self.document
        for raw in ref[1:].split("/")[1:]:
            key = raw.replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node[key]
        return node

    def deref(self, node: Any) -> Any:
        """`node`, or what its `$ref` chain ends at (a Reference Object's siblings dropped)."""
        for _ in range(MAX_DEPTH):
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
                return node
            node = self.resolve(node["$ref"])
        raise KeyError("reference cycle")


def canonical(value: Any) -> str:
    """One spelling per JSON value, for sets of enum values."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _covers(types: frozenset[str], kind: str) -> bool:
    return kind in types or (kind == "integer" and "number" in types)


def _intersect(a: frozenset[str] | None, b: frozenset[str]) -> frozenset[str]:
    if a is None:
        return b
    return frozenset(t for t in a | b if _covers(a, t) and _covers(b, t))


@dataclass(frozen=True)
class Hull:
    """What a schema admits, summed over its alternatives."""

    types: frozenset[str] | None  # None: any type
    values: frozenset[str] | None  # canonical enum/const values; None: unrestricted
    properties: dict[str, Any]
    required: frozenset[str]
    closed: bool  # additionalProperties: false in every object alternative
    extra: Any  # the schema of additional properties' values, if one is given
    items: Any
    bounds: dict[str, Any]


def _alternatives(resolver: Resolver, node: Any, refs: tuple[str, ...]) -> list[list[Any]]:
    """Each alternative of `node` as the list of the plain schemas that all apply."""
    if node is False:
        return []
    if not isinstance(node, dict):
        return [[{}]]
    factors: list[list[list[Any]]] = [[[{k: v for k, v in node.items() if k not in _COMBINATORS}]]]
    ref = node.get("$ref")
    if isinstance(ref, str) and ref not in refs:
        factors.append(_alternatives(resolver, resolver.resolve(ref), (*refs, ref)))
    factors += [_alternatives(resolver, member, refs) for member in node.get("allOf", [])]
    for union in ("anyOf", "oneOf"):
        if isinstance(node.get(union), list):
            factors.append([a for m in node[union] for a in _alternatives(resolver, m, refs)])
    product: list[list[Any]] = [[]]
    for options in factors:
        product = [done + more for done in product for more in options]
        if len(product) > MAX_ALTERNATIVES:
            return [[{}]]
    return product


@dataclass
class _Part:
    types: frozenset[str] | None
    values: frozenset[str] | None
    properties: dict[str, Any]
    required: set[str]
    closed: bool
    extra: list[Any]
    items: list[Any]
    bounds: dict[str, Any]


def _part(conjuncts: list[Any]) -> _Part:
    part = _Part(None, None, {}, set(), False, [], [], {})
    for schema in conjuncts:
        declared = schema.get("type")
        if declared is not None:
            types = frozenset([declared] if isinstance(declared, str) else declared)
            if schema.get("nullable") is True:  # OpenAPI 3.0
                types |= {"null"}
            part.types = _intersect(part.types, types)
        if "const" in schema or isinstance(schema.get("enum"), list):
            listed = [schema["const"]] if "const" in schema else schema["enum"]
            values = frozenset(canonical(v) for v in listed)
            part.values = values if part.values is None else part.values & values
            if declared is None:
                part.types = _intersect(part.types, frozenset(_json_type(v) for v in listed))
        for name, prop in schema.get("properties", {}).items():
            seen = part.properties.get(name)
            part.properties[name] = prop if seen is None else {"allOf": [seen, prop]}
        part.required |= set(schema.get("required", []))
        extra = schema.get("additionalProperties", True)
        part.closed |= extra is False or schema.get("unevaluatedProperties") is False
        if isinstance(extra, dict):
            part.extra.append(extra)
        if "items" in schema and not isinstance(schema["items"], list):
            part.items.append(schema["items"])
        for key in LOWER_BOUNDS:
            if isinstance(schema.get(key), int | float):
                part.bounds[key] = max(part.bounds.get(key, schema[key]), schema[key])
        for key in UPPER_BOUNDS:
            if isinstance(schema.get(key), int | float):
                part.bounds[key] = min(part.bounds.get(key, schema[key]), schema[key])
        for key in EXACT:
            if isinstance(schema.get(key), str):
                part.bounds[key] = part.bounds.get(key, frozenset()) | {schema[key]}
        if schema.get("uniqueItems") is True:
            part.bounds["uniqueItems"] = True
    if part.types is None and (part.properties or part.required):
        part.types = frozenset({"object"})
    elif part.types is None and part.items:
        part.types = frozenset({"array"})
    return part


def _loosest(key: str, values: list[Any]) -> Any:
    if key in LOWER_BOUNDS:
        return min(values)
    if key in UPPER_BOUNDS:
        return max(values)
    return values[0] if all(v == values[0] for v in values) else None


def _union(nodes: list[Any]) -> Any:
    return None if not nodes else nodes[0] if len(nodes) == 1 else {"anyOf": nodes}


def hull(resolver: Resolver, node: Any) -> Hull:
    """Sum up what `node` admits (references followed in `resolver`'s document)."""
    parts = [_part(conjuncts) for conjuncts in _alternatives(resolver, node, ())]
    untyped = any(p.types is None for p in parts)
    types = None if untyped else frozenset(t for p in parts for t in p.types or ())
    valued = [p for p in parts if p.types is None or p.types - {"null"}]
    values = None
    if valued and all(p.values is not None for p in valued):
        values = frozenset(v for p in valued for v in p.values or ())
    objects = [p for p in parts if p.types is None or "object" in p.types]
    properties: dict[str, list[Any]] = {}
    for p in objects:
        for name, prop in p.properties.items():
            properties.setdefault(name, []).append(prop)
    bounds: dict[str, Any] = {}
    for key, kinds in _APPLIES_TO.items():
        applicable = [p for p in parts if p.types is None or p.types & kinds]
        if applicable and all(key in p.bounds for p in applicable):
            loosest = _loosest(key, [p.bounds[key] for p in applicable])
            if loosest is not None:
                bounds[key] = loosest
    return Hull(
        types=types,
        values=values,
        properties={name: _union(nodes) for name, nodes in properties.items()},
        required=frozenset.intersection(*(frozenset(p.required) for p in objects))
        if objects
        else frozenset(),
        closed=bool(objects) and all(p.closed for p in objects),
        extra=_union([e for p in objects for e in p.extra]),
        items=_union([i for p in parts for i in p.items]),
        bounds=bounds,
    )
