"""Merge the OpenAPI 3.1 documents of several services into the gateway's one public document.

A pure function: the inputs are never changed, the same inputs give the same output.

- **Paths**: the union of every service's paths, less those under an excluded prefix (plain
  string prefix, as the gateway routes: ``/v1/reservations`` hides ``/v1/reservations/{id}``).
  Internal routes therefore never appear. A path-level ``servers`` or ``security`` is dropped
  or pushed down so that every operation goes through the gateway (``servers: [{"url": "/"}]``).
- **Components**: what only excluded operations reach (through ``$ref`` and discriminator
  mappings) is dropped, so the schemas of internal routes do not leak either; the rest is
  kept, referenced or not (a service may publish a schema on purpose). A component that
  several services define identically is kept once under its name. Same name, different
  content: every service's copy is renamed ``<service>__<Name>`` and every reference inside
  that service's part is rewritten. Equality is judged after rewriting, so a schema that only
  *refers* to a conflicting one is renamed too (repeated until nothing changes).
- **Security schemes**: merged like components (identical ``bearerAuth`` kept once); a renamed
  scheme is renamed in that service's security requirements too. A service's top-level
  ``security`` is pushed down into its operations that have none.
- **Tags**: unioned by name, the first description wins.
- **operationId**: an id used by more than one service is prefixed ``<service>__`` in every
  service that uses it (and in that service's link objects).
- The same ``(path, method)`` in two services: the first service (in mapping order) wins and
  the dropped one is listed in ``x-bazaar-dropped-operations``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["HTTP_METHODS", "merge_openapi", "safe_component_name"]

#: The operation keys of an OpenAPI 3.1 path item.
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_COMPONENT_PREFIX = "#/components/"
_VALID_NAME = re.compile(r"[^A-Za-z0-9._-]")
_SECURITY_SCHEMES = "securitySchemes"

Json = Any
RefMap = dict[tuple[str, str], str]  # (section, name) -> new name, per service


def safe_component_name(service: str, name: str) -> str:
    """``<service>__<name>`` made to match OpenAPI's ``^[a-zA-Z0-9.\\-_]+$`` for keys."""
    return _VALID_NAME.sub("_", f"{service}__{name}")


def merge_openapi(
    documents: Mapping[str, Mapping[str, Any]],
    *,
    title: str,
    version: str,
    exclude_prefixes: Sequence[str] = ("/v1/reservations",),
) -> dict[str, Any]:
    """One OpenAPI 3.1 document of the public routes of ``documents`` (service name → document)."""
    parts = {
        service: _ServicePart(service, copy.deepcopy(dict(doc)), exclude_prefixes)
        for service, doc in documents.items()
    }

    renames = _resolve_component_names(parts)
    op_renames = _resolve_operation_ids(parts)

    merged_components: dict[str, dict[str, Json]] = {}
    merged_paths: dict[str, dict[str, Json]] = {}
    merged_webhooks: dict[str, Json] = {}
    tags: dict[str, dict[str, Json]] = {}
    dropped: list[str] = []
    dialects: set[str] = set()

    for service, part in parts.items():
        rename = renames[service]
        op_rename = op_renames[service]
        rewrite = _Rewriter(rename, op_rename)

        for section, entries in part.components.items():
            target = merged_components.setdefault(section, {})
            for name, value in entries.items():
                new_name = rename.get((section, name), name)
                # Identical content under one name was checked by the resolver: keep the first.
                target.setdefault(new_name, rewrite(value))

        for path, item in part.paths.items():
            item = rewrite(item)
            _rename_operation_ids(item, op_rename)
            existing = merged_paths.get(path)
            if existing is None:
                merged_paths[path] = item
                continue
            for method in HTTP_METHODS:
                if method not in item:
                    continue
                if method in existing:
                    dropped.append(f"{service} {method.upper()} {path}")
                else:
                    existing[method] = item[method]

        for name, item in part.webhooks.items():
            item = rewrite(item)
            _rename_operation_ids(item, op_rename)
            if name in merged_webhooks:
                dropped.append(f"{service} webhook {name}")
            else:
                merged_webhooks[name] = item

        for tag in part.tags:
            tags.setdefault(tag["name"], tag)
        if isinstance(part.raw.get("jsonSchemaDialect"), str):
            dialects.add(part.raw["jsonSchemaDialect"])

    result: dict[str, Json] = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "x-bazaar-services": {
                service: {
                    "title": part.info.get("title", service),
                    "version": part.info.get("version", ""),
                }
                for service, part in parts.items()
            },
        },
        "servers": [{"url": "/"}],
        "paths": {path: merged_paths[path] for path in sorted(merged_paths)},
    }
    if len(dialects) == 1:
        result["jsonSchemaDialect"] = dialects.pop()
    if merged_webhooks:
        result["webhooks"] = merged_webhooks
    components = {
        section: {name: entries[name] for name in sorted(entries)}
        for section, entries in sorted(merged_components.items())
        if entries
    }
    if components:
        result["components"] = components
    if tags:
        result["tags"] = list(tags.values())
    if dropped:
        result["x-bazaar-dropped-operations"] = dropped
    _dedupe_operation_ids(result["paths"], result.get("webhooks", {}))
    return result


class _ServicePart:
    """One service's document, reduced to what the merged document takes from it."""

    def __init__(self, service: str, doc: dict[str, Json], exclude: Sequence[str]) -> None:
        self.service = service
        self.raw = doc
        info = doc.get("info")
        self.info: dict[str, Json] = info if isinstance(info, dict) else {}
        top_security = doc.get("security")

        self.paths: dict[str, dict[str, Json]] = {}
        excluded: list[Json] = []
        for path, item in _mapping(doc.get("paths")).items():
            if not isinstance(item, dict):
                continue
            if any(path.startswith(p) for p in exclude):
                excluded.append(item)
            else:
                self.paths[path] = _normalise_path_item(item, top_security)
        self.webhooks: dict[str, Json] = {
            name: _normalise_path_item(item, top_security)
            for name, item in _mapping(doc.get("webhooks")).items()
            if isinstance(item, dict)
        }

        all_components = {
            section: dict(entries)
            for section, entries in _mapping(doc.get("components")).items()
            if isinstance(entries, dict)
        }
        # What only excluded operations use goes with them; what nothing uses stays (a service
        # may publish a schema on purpose). Security schemes are named, never referenced.
        internal = _reachable(all_components, excluded) - _reachable(
            all_components, [self.paths, self.webhooks]
        )
        self.components: dict[str, dict[str, Json]] = {}
        for section, entries in all_components.items():
            kept = {n: v for n, v in entries.items() if (section, n) not in internal}
            if kept:
                self.components[section] = kept

        used_tags = {
            tag
            for item in [*self.paths.values(), *self.webhooks.values()]
            for op in _operations(item)
            for tag in op.get("tags", [])
            if isinstance(tag, str)
        }
        declared_tags = doc.get("tags")
        declared = [
            t
            for t in (declared_tags if isinstance(declared_tags, list) else [])
            if isinstance(t, dict) and isinstance(t.get("name"), str)
        ]
        # A tag declared only for excluded operations (e.g. "reservations (internal)") goes too.
        self.tags = [t for t in declared if t["name"] in used_tags]


def _mapping(value: Json) -> dict[str, Json]:
    return value if isinstance(value, dict) else {}


def _operations(item: Mapping[str, Json]) -> Iterable[dict[str, Json]]:
    return (item[m] for m in HTTP_METHODS if isinstance(item.get(m), dict))


def _normalise_path_item(item: dict[str, Json], top_security: Json) -> dict[str, Json]:
    """Push path-level parameters and the document's security into the operations.

    Two services may then share a path item without their path-level fields getting mixed,
    and the merged document needs no top-level ``security``. ``servers`` are dropped: every
    call goes through the gateway.
    """
    path_params = item.get("parameters")
    out: dict[str, Json] = {
        key: value
        for key, value in item.items()
        if key not in HTTP_METHODS and key not in ("parameters", "servers")
    }
    for method in HTTP_METHODS:
        op = item.get(method)
        if not isinstance(op, dict):
            continue
        op = dict(op)
        op.pop("servers", None)
        if isinstance(path_params, list) and path_params:
            own_params = op.get("parameters")
            own: list[Json] = own_params if isinstance(own_params, list) else []
            own_keys = {_param_key(p) for p in own}
            inherited = [p for p in path_params if _param_key(p) not in own_keys]
            op["parameters"] = [*inherited, *own]
        if "security" not in op and top_security is not None:
            op["security"] = copy.deepcopy(top_security)
        out[method] = op
    return out


def _param_key(param: Json) -> tuple[str, str] | str:
    if isinstance(param, dict) and "$ref" in param:
        return str(param["$ref"])
    if isinstance(param, dict):
        return (str(param.get("name")), str(param.get("in")))
    return repr(param)


def _split_ref(ref: str) -> tuple[str, str, str] | None:
    """``#/components/schemas/Name/rest`` → ``("schemas", "Name", "/rest")``; else None."""
    if not ref.startswith(_COMPONENT_PREFIX):
        return None
    pieces = ref[len(_COMPONENT_PREFIX) :].split("/", 2)
    if len(pieces) < 2:
        return None
    section, name = pieces[0], _unescape(pieces[1])
    rest = "/" + pieces[2] if len(pieces) == 3 else ""
    return section, name, rest


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _walk_refs(node: Json, visit: Callable[[str], None]) -> None:
    """Call ``visit`` with every ``$ref`` and discriminator mapping target under ``node``."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            visit(ref)
        discriminator = node.get("discriminator")
        if isinstance(discriminator, dict):
            for target in _mapping(discriminator.get("mapping")).values():
                if isinstance(target, str):
                    visit(target)
        for value in node.values():
            _walk_refs(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk_refs(value, visit)


def _reachable(
    components: Mapping[str, Mapping[str, Json]], roots: Sequence[Json]
) -> set[tuple[str, str]]:
    """The ``(section, name)`` of the components that ``roots`` reach, transitively."""
    seen: set[tuple[str, str]] = set()
    pending: list[Json] = list(roots)

    def visit(ref: str) -> None:
        split = _split_ref(ref)
        if split is None:
            return
        section, name, _ = split
        if (section, name) in seen or name not in components.get(section, {}):
            return
        seen.add((section, name))
        pending.append(components[section][name])

    while pending:
        _walk_refs(pending.pop(), visit)
    return seen


class _Rewriter:
    """Deep-copies a node, rewriting references and security requirements for one service."""

    def __init__(self, renames: RefMap, op_renames: Mapping[str, str]) -> None:
        self.renames = renames
        self.op_renames = op_renames
        self.schemes = {
            name: new for (section, name), new in renames.items() if section == _SECURITY_SCHEMES
        }

    def ref(self, ref: str) -> str:
        split = _split_ref(ref)
        if split is None:
            return ref
        section, name, rest = split
        new = self.renames.get((section, name))
        if new is None:
            return ref
        return f"{_COMPONENT_PREFIX}{section}/{_escape(new)}{rest}"

    def __call__(self, node: Json, key: str | None = None) -> Json:
        if isinstance(node, list):
            if key == "security":
                return [self._requirement(req) for req in node]
            return [self(value) for value in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Json] = {}
        for k, value in node.items():
            if k == "$ref" and isinstance(value, str):
                out[k] = self.ref(value)
            elif k == "mapping" and key == "discriminator" and isinstance(value, dict):
                out[k] = {n: self.ref(t) if isinstance(t, str) else t for n, t in value.items()}
            elif k == "links" and isinstance(value, dict):
                out[k] = {n: self._link(link) for n, link in value.items()}
            else:
                out[k] = self(value, k)
        return out

    def _requirement(self, req: Json) -> Json:
        if not isinstance(req, dict):
            return req
        return {self.schemes.get(name, name): copy.deepcopy(s) for name, s in req.items()}

    def _link(self, link: Json) -> Json:
        link = self(link)
        if isinstance(link, dict) and link.get("operationId") in self.op_renames:
            link["operationId"] = self.op_renames[link["operationId"]]
        return link


def _canonical(value: Json) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _resolve_component_names(parts: Mapping[str, _ServicePart]) -> dict[str, RefMap]:
    """Per service, the components to rename: same name, different content (after rewriting)."""
    conflicting: set[tuple[str, str]] = set()
    taken = {
        (section, name)
        for part in parts.values()
        for section, entries in part.components.items()
        for name in entries
    }
    allocated: dict[tuple[str, str, str], str] = {}

    def renames_for(service: str) -> RefMap:
        out: RefMap = {}
        for section, name in sorted(conflicting):
            new = allocated.get((service, section, name))
            if new is None:
                new = _unique_name(service, (section, name), taken)
                taken.add((section, new))
                allocated[(service, section, name)] = new
            out[(section, name)] = new
        return out

    while True:
        contents: dict[tuple[str, str], set[str]] = {}
        for service, part in parts.items():
            rewrite = _Rewriter(renames_for(service), {})
            for section, entries in part.components.items():
                for name, value in entries.items():
                    contents.setdefault((section, name), set()).add(_canonical(rewrite(value)))
        newly = {key for key, variants in contents.items() if len(variants) > 1} - conflicting
        if not newly:
            break
        conflicting |= newly

    result: dict[str, RefMap] = {}
    for service, part in parts.items():
        own = {(s, n) for s, entries in part.components.items() for n in entries}
        result[service] = {key: new for key, new in renames_for(service).items() if key in own}
    return result


def _unique_name(service: str, key: tuple[str, str], taken: set[tuple[str, str]]) -> str:
    section, name = key
    base = safe_component_name(service, name)
    candidate, n = base, 2
    while (section, candidate) in taken:
        candidate, n = f"{base}_{n}", n + 1
    return candidate


def _resolve_operation_ids(parts: Mapping[str, _ServicePart]) -> dict[str, dict[str, str]]:
    """Per service, operationId → new id, for ids that more than one service uses."""
    owners: dict[str, set[str]] = {}
    for service, part in parts.items():
        for item in [*part.paths.values(), *part.webhooks.values()]:
            for op in _operations(item):
                op_id = op.get("operationId")
                if isinstance(op_id, str):
                    owners.setdefault(op_id, set()).add(service)
    all_ids = set(owners)
    result: dict[str, dict[str, str]] = {service: {} for service in parts}
    for op_id, services in owners.items():
        if len(services) < 2:
            continue
        for service in services:
            new, n = f"{service}__{op_id}", 2
            while new in all_ids:
                new, n = f"{service}__{op_id}_{n}", n + 1
            all_ids.add(new)
            result[service][op_id] = new
    return result


def _dedupe_operation_ids(*groups: Mapping[str, Json]) -> None:
    """Last resort: one service reusing an id for two operations gets ``_2``, ``_3``…"""
    items = [item for group in groups for item in group.values()]
    seen: set[str] = set()
    all_ids = {
        op["operationId"]
        for item in items
        for op in _operations(item)
        if isinstance(op.get("operationId"), str)
    }
    for item in items:
        for op in _operations(item):
            op_id = op.get("operationId")
            if not isinstance(op_id, str):
                continue
            if op_id in seen:
                new, n = f"{op_id}_2", 3
                while new in all_ids:
                    new, n = f"{op_id}_{n}", n + 1
                all_ids.add(new)
                op["operationId"] = op_id = new
            seen.add(op_id)


def _rename_operation_ids(item: dict[str, Json], renames: Mapping[str, str]) -> None:
    for op in _operations(item):
        op_id = op.get("operationId")
        if isinstance(op_id, str) and op_id in renames:
            op["operationId"] = renames[op_id]
