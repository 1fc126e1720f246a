"""What a change to one schema breaks, judged from the side that must cope with it.

READ (responses, events: the owner sends, clients read): a field removed or made optional,
a type widened (null included), an enum value added or an enum dropped. Bounds are not
compared: readers are not expected to re-check them.

WRITE (request bodies, parameters: clients send, the owner accepts): a field removed, a new
required field, an optional field made required, undeclared fields refused where they were
accepted, a type narrowed (null included), an enum value removed or an enum imposed, a bound
tightened, a pattern or format added or changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .schema import EXACT, LOWER_BOUNDS, MAX_DEPTH, UPPER_BOUNDS, Direction, Hull, Resolver, hull


@dataclass(frozen=True, order=True)
class Break:
    """One breaking change of a contract document, as the gate prints it."""

    document: str  # the file name: orders.json, events.yaml
    where: str  # what it is about: "GET /v1/orders/{order_id}", "event orders.order.placed"
    what: str  # what happened: "response 200 field status removed"

    def __str__(self) -> str:
        return f"BREAKING {self.document}: {self.where} {self.what}"


@dataclass(frozen=True)
class Change:
    """One breaking difference inside a schema: where (a field path, '' for the root) and what."""

    path: str
    message: str

    def describe(self, subject: str) -> str:
        """`subject` (e.g. "response 200") followed by the field and what happened to it."""
        if self.path:
            return f"{subject} field {self.path} {self.message}"
        return f"{subject} {self.message}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _types(types: frozenset[str] | None) -> str:
    return "any" if types is None else " or ".join(sorted(types))


def _has(types: frozenset[str], kind: str) -> bool:
    return kind in types or (kind == "integer" and "number" in types)


def _beyond(wider: frozenset[str] | None, narrower: frozenset[str] | None) -> set[str] | None:
    """The types `wider` admits and `narrower` does not; None when that is 'anything'."""
    if narrower is None:
        return set()
    if wider is None:
        return None
    return {t for t in wider if not _has(narrower, t)}


def _values(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


@dataclass(frozen=True)
class _Pair:
    old: Resolver
    new: Resolver
    direction: Direction


def _type_changes(pair: _Pair, a: Hull, b: Hull) -> Iterator[str]:
    read = pair.direction is Direction.READ
    # READ: types the readers never saw; WRITE: types the clients send and no longer may.
    surprising = _beyond(b.types, a.types) if read else _beyond(a.types, b.types)
    if surprising == {"null"}:
        yield "can now be null" if read else "no longer accepts null"
    elif surprising is None or surprising:
        # Still a superset (READ) or a subset (WRITE) of the types: widened / narrowed.
        kept = not _beyond(a.types, b.types) if read else not _beyond(b.types, a.types)
        how = ("widened" if read else "narrowed") if kept else "changed"
        yield f"type {how}: {_types(a.types)} -> {_types(b.types)}"


def _value_changes(pair: _Pair, a: Hull, b: Hull) -> Iterator[str]:
    if pair.direction is Direction.READ and a.values is not None:
        if b.values is None:
            yield f"no longer limited to enum values {_values(a.values)}"
        elif added := b.values - a.values:
            yield f"enum value {_values(added)} added"
    elif pair.direction is Direction.WRITE and b.values is not None:
        if a.values is None:
            yield f"now limited to enum values {_values(b.values)}"
        elif removed := a.values - b.values:
            yield f"enum value {_values(removed)} removed"


def _bound_changes(a: Hull, b: Hull) -> Iterator[str]:
    for key in (*LOWER_BOUNDS, *UPPER_BOUNDS, *EXACT, "uniqueItems"):
        old, new = a.bounds.get(key), b.bounds.get(key)
        if new is None or new == old:
            continue
        if key in EXACT:
            shown = ", ".join(sorted(new))
            yield f"{key} {shown} added" if old is None else f"{key} changed to {shown}"
        elif old is None:
            yield f"{key} {new} added"
        elif (key in LOWER_BOUNDS and new > old) or (key in UPPER_BOUNDS and new < old):
            yield f"{key} tightened: {old} -> {new}"


def _field_changes(pair: _Pair, a: Hull, b: Hull, path: str) -> Iterator[Change]:
    if b.types is not None and "object" not in b.types:
        return  # no object any more: the type change says it
    for name in a.properties:
        if name not in b.properties:
            yield Change(_join(path, name), "removed")
        elif pair.direction is Direction.READ and name in a.required - b.required:
            yield Change(_join(path, name), "made optional")
    if pair.direction is Direction.WRITE:
        for name in sorted(b.required - a.required):
            verb = "made required" if name in a.properties else "added as required"
            yield Change(_join(path, name), verb)
        if b.closed and not a.closed:
            yield Change(path, "no longer accepts undeclared fields")


def changes(
    old: Resolver, new: Resolver, old_node: object, new_node: object, direction: Direction
) -> list[Change]:
    """Every breaking difference from `old_node` (in `old`'s document) to `new_node`."""
    return list(_compare(_Pair(old, new, direction), old_node, new_node, "", frozenset()))


def _compare(
    pair: _Pair, old_node: object, new_node: object, path: str, stack: frozenset[tuple[int, int]]
) -> Iterator[Change]:
    key = (id(old_node), id(new_node))
    if key in stack or len(stack) > MAX_DEPTH:
        return  # a recursive schema: this pair is being compared further up
    stack |= {key}
    a, b = hull(pair.old, old_node), hull(pair.new, new_node)
    for message in _type_changes(pair, a, b):
        yield Change(path, message)
    for message in _value_changes(pair, a, b):
        yield Change(path, message)
    if pair.direction is Direction.WRITE:
        for message in _bound_changes(a, b):
            yield Change(path, message)
    yield from _field_changes(pair, a, b, path)
    for name, node in a.properties.items():
        if name in b.properties:
            yield from _compare(pair, node, b.properties[name], _join(path, name), stack)
    if a.items is not None and b.items is not None:
        yield from _compare(pair, a.items, b.items, f"{path}[]", stack)
    if a.extra is not None and b.extra is not None:
        yield from _compare(pair, a.extra, b.extra, f"{path}{{}}", stack)
