"""Make a service's OpenAPI document tell the truth: problem+json errors, docstring summaries."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from bazaar.shared.problem import PROBLEM_CONTENT_TYPE

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; validation problems add `errors`.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "trace_id": {"type": ["string", "null"]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Route `responses=` entries documenting the problem answers a route can give."""
    return {status: {"description": HTTPStatus(status).phrase} for status in statuses}


def operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names (stable, readable)."""
    return route.name


def _operations(document: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method in {"get", "put", "post", "patch", "delete", "head", "options"}:
                yield operation


def _rewrite(document: dict[str, Any]) -> dict[str, Any]:
    for operation in _operations(document):
        description = operation.get("description", "")
        if description:
            operation["summary"] = description.strip().splitlines()[0]
        for status, response in operation.get("responses", {}).items():
            if status.isdigit() and int(status) >= 400:
                response["content"] = {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}}
                if int(status) == 422:
                    response["description"] = "Validation Error"
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    return document


def install_openapi(app: FastAPI) -> None:
    """Replace the app's document builder with one that documents problem+json errors."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = _rewrite(document)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
