"""Security a route declares for OpenAPI: it replaces the one requirement FastAPI derives."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI

from bazaar.shared.auth import bearer_scheme

#: The `openapi_extra` key of a route's own `security` (FastAPI would append a `security`
#: given there to the requirement it derives from the route's dependencies).
DECLARED_SECURITY = "x-bazaar-security"


def either_scope(scopes: Iterable[str]) -> dict[str, Any]:
    """A route's `openapi_extra` for a token with any one of `scopes`: one requirement each.

    The entries of an OpenAPI `security` list are alternatives; FastAPI writes every scope
    of a route's dependencies into one entry, which reads as needing them all.
    """
    return {DECLARED_SECURITY: [{bearer_scheme.scheme_name: [scope]} for scope in scopes]}


def use_declared_security(app: FastAPI) -> None:
    """Give each operation that declares its security (see `either_scope`) exactly that."""
    build = app.openapi

    def document() -> dict[str, Any]:
        built = build()
        for item in built.get("paths", {}).values():
            for operation in item.values():
                if isinstance(operation, dict) and DECLARED_SECURITY in operation:
                    operation["security"] = operation.pop(DECLARED_SECURITY)
        return built

    app.openapi = document  # type: ignore[method-assign]
