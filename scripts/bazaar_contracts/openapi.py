"""What a change to an OpenAPI 3 document breaks for the clients of its operations."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .change import Break, changes
from .schema import Direction, Resolver

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PATH_PARAMETER = re.compile(r"\{([^}/]*)\}")
Operation = tuple[str, dict[str, Any], list[Any]]  # path as written, operation, path's parameters


def operations(document: dict[str, Any]) -> dict[tuple[str, str], Operation]:
    """Every operation by (path with its parameters unnamed, METHOD)."""
    found: dict[tuple[str, str], Operation] = {}
    resolver = Resolver(document)
    for path, raw in (document.get("paths") or {}).items():
        item = resolver.deref(raw)
        template = _PATH_PARAMETER.sub("{}", path)
        for method in METHODS:
            if isinstance(item.get(method), dict):
                found[template, method.upper()] = (path, item[method], item.get("parameters", []))
    return found


def _parameters(resolver: Resolver, op: Operation) -> dict[tuple[str, str], dict[str, Any]]:
    """Parameters by (in, name); a path parameter by its place, a header's name in lower case."""
    path, operation, shared = op
    places = _PATH_PARAMETER.findall(path)
    keyed: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in [*shared, *operation.get("parameters", [])]:
        parameter = resolver.deref(raw)
        where, name = parameter.get("in", "query"), str(parameter.get("name"))
        if where == "path" and name in places:
            name = str(places.index(name))
        elif where == "header":
            name = name.lower()
        keyed[where, name] = parameter
    return keyed


def _parameter_schema(parameter: dict[str, Any]) -> Any:
    if "schema" in parameter:
        return parameter["schema"]
    content = parameter.get("content") or {}
    return next((media.get("schema", {}) for media in content.values()), {})


def _parameter_changes(old: Resolver, new: Resolver, a: Operation, b: Operation) -> Iterator[str]:
    before, after = _parameters(old, a), _parameters(new, b)
    for key, parameter in before.items():
        subject = f"parameter {key[0]} {parameter.get('name')}"
        if key not in after:
            yield f"{subject} removed"
            continue
        if after[key].get("required") and not parameter.get("required"):
            yield f"{subject} made required"
        schemas = _parameter_schema(parameter), _parameter_schema(after[key])
        for change in changes(old, new, *schemas, Direction.WRITE):
            yield change.describe(subject)
    for key, parameter in after.items():
        if key not in before and parameter.get("required"):
            yield f"parameter {key[0]} {parameter.get('name')} added as required"


def _content_changes(
    old: Resolver, new: Resolver, a: dict[str, Any], b: dict[str, Any], subject: str, how: Direction
) -> Iterator[str]:
    for media, was in a.items():
        label = f"{subject} {media}" if len(a) > 1 else subject
        if media not in b:
            yield f"{subject} {media} removed"
        elif "schema" in was:
            for change in changes(old, new, was["schema"], b[media].get("schema", {}), how):
                yield change.describe(label)


def _body_changes(old: Resolver, new: Resolver, a: Operation, b: Operation) -> Iterator[str]:
    was, now = a[1].get("requestBody"), b[1].get("requestBody")
    was, now = old.deref(was) if was else None, new.deref(now) if now else None
    if was is None:
        if now is not None and now.get("required"):
            yield "request body added as required"
        return
    if now is None:
        yield "request body removed"
        return
    if now.get("required") and not was.get("required"):
        yield "request body made required"
    before, after = was.get("content") or {}, now.get("content") or {}
    yield from _content_changes(old, new, before, after, "request body", Direction.WRITE)


def _response_changes(old: Resolver, new: Resolver, a: Operation, b: Operation) -> Iterator[str]:
    after = {str(code): raw for code, raw in (b[1].get("responses") or {}).items()}
    for code, raw in (a[1].get("responses") or {}).items():
        subject = f"response {code}"
        if str(code) not in after:
            yield f"{subject} removed"
            continue
        was, now = old.deref(raw), new.deref(after[str(code)])
        before_content, after_content = was.get("content") or {}, now.get("content") or {}
        yield from _content_changes(
            old, new, before_content, after_content, subject, Direction.READ
        )
        headers = {name.lower(): h for name, h in (now.get("headers") or {}).items()}
        for name, header in (was.get("headers") or {}).items():
            if name.lower() not in headers:
                yield f"{subject} header {name} removed"
                continue
            schemas = (
                _parameter_schema(old.deref(header)),
                _parameter_schema(new.deref(headers[name.lower()])),
            )
            for change in changes(old, new, *schemas, Direction.READ):
                yield change.describe(f"{subject} header {name}")


Requirement = dict[str, frozenset[str]]


def _requirements(document: dict[str, Any], operation: dict[str, Any]) -> list[Requirement]:
    listed = operation.get("security", document.get("security")) or []
    return [{scheme: frozenset(scopes) for scheme, scopes in r.items()} for r in listed]


def _show(requirements: list[Requirement]) -> str:
    if not requirements or {} in requirements:
        return "no authentication"
    return " or ".join(
        " and ".join(f"{s} [{', '.join(sorted(scopes))}]" for s, scopes in sorted(r.items()))
        for r in requirements
    )


def _meets(held: Requirement, need: Requirement) -> bool:
    """Whether credentials that met the requirement `held` meet `need` too."""
    return all(scheme in held and scopes <= held[scheme] for scheme, scopes in need.items())


def _security_changes(
    documents: tuple[dict[str, Any], dict[str, Any]], a: Operation, b: Operation
) -> Iterator[str]:
    was, now = _requirements(documents[0], a[1]), _requirements(documents[1], b[1])
    if not now or {} in now:
        return
    if not all(any(_meets(held, need) for need in now) for held in was or [{}]):
        yield f"security tightened: {_show(now)} (was {_show(was)})"


def _scheme_changes(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Break]:
    after = (new.get("components") or {}).get("securitySchemes") or {}
    for name, scheme in ((old.get("components") or {}).get("securitySchemes") or {}).items():
        if name not in after:
            yield Break("", "components", f"security scheme {name} removed")
            continue
        keys = ("type", "scheme", "in", "name")
        if any(str(scheme.get(k)).lower() != str(after[name].get(k)).lower() for k in keys):
            yield Break("", "components", f"security scheme {name} changed")


def compare_openapi(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Break]:
    """The breaking changes from `old` to `new`, an OpenAPI document named `name`."""
    old_resolver, new_resolver = Resolver(old), Resolver(new)
    after = operations(new)
    found: list[Break] = []
    for key, a in operations(old).items():
        where = f"{key[1]} {a[0]}"
        if key not in after:
            found.append(Break(name, where, "removed"))
            continue
        b = after[key]
        for what in (
            *_parameter_changes(old_resolver, new_resolver, a, b),
            *_body_changes(old_resolver, new_resolver, a, b),
            *_response_changes(old_resolver, new_resolver, a, b),
            *_security_changes((old, new), a, b),
        ):
            found.append(Break(name, where, what))
    found += [Break(name, b.where, b.what) for b in _scheme_changes(old, new)]
    return found
