"""A sweep of hostile text: a NUL in every string parameter and body field an API declares.

`nul_probes(document)` walks an OpenAPI document and makes, for every operation, one
request per string it takes (path, query, header, JSON or form body field) with that
string holding a NUL, everything else valid; each probe names the location a 422 must name.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

#: NUL as a URL carries it; in a body it is the character itself (JSON sends `\u0000`).
PERCENT_NUL = "%00"
RAW_NUL = "\x00"
#: Values that satisfy the patterns and names our schemas use.
_PATTERN_CANDIDATES = ("EUR", "sweep-1", "abc", "A1")
_BY_NAME = {
    "email": "nul-sweep@example.com",
    "username": "nul-sweep@example.com",
    "password": "correct horse battery staple",
    "grant_type": "password",
}
_JSON_TYPES = ("application/json", "application/merge-patch+json")
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Probe:
    """One request carrying a NUL in one place, and the error location it must be named by."""

    method: str
    path: str
    target: tuple[str | int, ...]
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    form: Mapping[str, str] | None = None

    @property
    def url(self) -> str:
        """The path and query to request."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def describe(self) -> str:
        """A one-line name for assertion messages."""
        return f"{self.method} {self.url} NUL at {list(self.target)}"


class _Resolver:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """Follow `$ref`s and pick the first non-null member of an `anyOf`/`oneOf`."""
        while True:
            if "$ref" in schema:
                node: Any = self.document
                for part in schema["$ref"].lstrip("#/").split("/"):
                    node = node[part]
                schema = node
            elif "anyOf" in schema or "oneOf" in schema:
                members = schema.get("anyOf") or schema.get("oneOf") or []
                schema = next(m for m in members if m.get("type") != "null")
            elif "allOf" in schema and len(schema["allOf"]) == 1:
                schema = schema["allOf"][0]
            else:
                return schema

    def example(self, schema: Mapping[str, Any], name: str = "") -> Any:
        """A valid value for `schema` (as far as its declared constraints go)."""
        schema = self.resolve(schema)
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            properties = schema.get("properties", {})
            return {key: self.example(sub, key) for key, sub in properties.items()}
        if kind == "array":
            count = max(int(schema.get("minItems", 1)), 1)
            return [self.example(schema.get("items", {}), name) for _ in range(count)]
        if kind == "integer":
            return max(int(schema.get("minimum", 1)), 1)
        if kind == "number":
            return float(max(schema.get("minimum", 1), 1))
        if kind == "boolean":
            return True
        return _example_string(schema, name)

    def nul_variants(
        self, schema: Mapping[str, Any], at: tuple[str | int, ...] = ()
    ) -> Iterator[tuple[tuple[str | int, ...], Any]]:
        """Each string's location (at any depth, in every `anyOf`/`oneOf` branch and under
        `additionalProperties`) with a value of `schema` holding a NUL there."""
        while "$ref" in schema or ("allOf" in schema and len(schema["allOf"]) == 1):
            schema = self.resolve(schema) if "$ref" in schema else schema["allOf"][0]
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            for branch in branches:
                if branch.get("type") != "null":
                    yield from self.nul_variants(branch, at)
            return
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            base = self.example(schema)
            fields = dict(schema.get("properties", {}))
            extra = schema.get("additionalProperties")
            if isinstance(extra, Mapping) and extra:
                fields.setdefault("sweep", extra)
            for key, sub in fields.items():
                for loc, value in self.nul_variants(sub, (*at, key)):
                    yield loc, {**base, key: value}
        elif kind == "array":
            items = schema.get("items", {})
            rest = [self.example(items) for _ in range(max(int(schema.get("minItems", 1)), 1) - 1)]
            for loc, value in self.nul_variants(items, (*at, 0)):
                yield loc, [value, *rest]
        elif kind == "string":
            yield at, _with_nul(self.example(schema, str(at[-1]) if at else ""))


def _example_string(schema: Mapping[str, Any], name: str) -> str:
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00+00:00"
    pattern = schema.get("pattern")
    if pattern:
        for candidate in (_BY_NAME.get(name, ""), *_PATTERN_CANDIDATES):
            if candidate and re.search(pattern, candidate):
                return candidate
    value = _BY_NAME.get(name, "sweep")
    return value.ljust(int(schema.get("minLength", 1)), "x")


def _with_nul(value: Any) -> str:
    text = str(value)
    return text[:1] + RAW_NUL + text[1:]


def nul_probes(document: Mapping[str, Any]) -> list[Probe]:
    """Every probe of every operation of an OpenAPI document (both spellings of NUL)."""
    resolver = _Resolver(document)
    probes: list[Probe] = []
    for template, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            probes.extend(_operation_probes(resolver, template, method.upper(), operation))
    return probes


def _operation_probes(
    resolver: _Resolver, template: str, method: str, operation: Mapping[str, Any]
) -> Iterator[Probe]:
    params = [dict(p) for p in operation.get("parameters", [])]
    # Optional query parameters stay out (a made-up cursor would be refused on its own);
    # headers go in, since a route may need one (Idempotency-Key) before reading its body.
    values = {
        (p["in"], p["name"]): resolver.example(p.get("schema", {}), p["name"])
        for p in params
        if p.get("required") or p["in"] != "query"
    }
    body_type, body_schema = _body(operation)
    body = resolver.example(body_schema) if body_schema is not None else None

    def build(
        target: tuple[str | int, ...],
        overrides: Mapping[tuple[str, str], str] = {},
        body_value: Any = body,
    ) -> Probe:
        chosen = {**values, **overrides}
        path = template
        query: list[str] = []
        headers: dict[str, str] = {}
        for (where, name), value in chosen.items():
            text = value if isinstance(value, str) else str(value).lower()
            if where == "path":
                path = path.replace("{" + name + "}", _url_part(text))
            elif where == "query":
                query.append(f"{quote(name)}={_url_part(text)}")
            elif where == "header":
                headers[name] = text
        if body_type == _FORM:
            form = {k: str(v) for k, v in (body_value or {}).items()}
            return Probe(method, path, target, "&".join(query), headers, form=form)
        return Probe(method, path, target, "&".join(query), headers, json=body_value)

    for p in params:
        schema = resolver.resolve(p.get("schema", {}))
        if schema.get("type") != "string":
            continue
        key = target = (p["in"], p["name"])
        if p["in"] == "header":
            yield build(target, {key: _with_nul(values[key])})
            continue
        yield build(target, {key: _PercentEncoded(f"a{PERCENT_NUL}b")})
    if body_schema is not None:
        for at, value in resolver.nul_variants(body_schema):
            yield build(("body", *at), body_value=value)


class _PercentEncoded(str):
    """A URL part already percent-encoded: put in the URL as it is."""


def _url_part(text: str) -> str:
    return text if isinstance(text, _PercentEncoded) else quote(text, safe="")


def _body(operation: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any] | None]:
    content = operation.get("requestBody", {}).get("content", {})
    for media_type in (*_JSON_TYPES, _FORM):
        if media_type in content:
            return media_type, content[media_type].get("schema", {})
    return None, None


def names_target(problem: Mapping[str, Any], target: tuple[str | int, ...]) -> bool:
    """Whether a 422's `errors` name the probed location (or a place inside it)."""
    wanted = [str(part).lower() for part in target]
    for error in problem.get("errors", []):
        loc = [str(part).lower() for part in error.get("loc", [])]
        if loc[: len(wanted)] == wanted:
            return True
    return False


#: Every scope of the suite: a sweep's token may call every operation.
EVERY_SCOPE = (
    "catalog:read",
    "catalog:write",
    "catalog:reserve",
    "orders:read",
    "orders:write",
    "orders:admin",
    "users:admin",
)


async def send(
    client: httpx.AsyncClient, probe: Probe, headers: Mapping[str, str]
) -> httpx.Response:
    """Send one probe with `headers` (a bearer token, say) added."""
    sent = {**headers, **probe.headers}
    if probe.form is not None:
        return await client.request(probe.method, probe.url, data=dict(probe.form), headers=sent)
    return await client.request(probe.method, probe.url, json=probe.json, headers=sent)


async def sweep(
    client: httpx.AsyncClient, document: Mapping[str, Any], headers: Mapping[str, str]
) -> list[tuple[Probe, httpx.Response]]:
    """Send every probe of `document`; return each with its answer."""
    return [(probe, await send(client, probe, headers)) for probe in nul_probes(document)]


def is_named_422(probe: Probe, response: httpx.Response) -> bool:
    """The answer a NUL deserves: 422 whose `errors` name where it was."""
    return response.status_code == 422 and names_target(response.json(), probe.target)


def misanswered(
    answers: list[tuple[Probe, httpx.Response]],
    *,
    expected: Callable[[Probe, httpx.Response], bool] = is_named_422,
) -> list[str]:
    """Each probe whose answer is not the expected one, described for an assertion message."""
    return [
        f"{probe.describe()} -> {response.status_code} {response.text[:200]}"
        for probe, response in answers
        if not expected(probe, response)
    ]
