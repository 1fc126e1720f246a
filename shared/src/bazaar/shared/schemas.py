"""Text the database can store: every request body and parameter refuses NUL characters (422).

PostgreSQL text cannot hold NUL (U+0000), so a NUL reaching SQL fails as a 500. One rule
keeps it out everywhere: `InputModel` (the base of every request body) refuses it in any
field, and `refuse_nul_characters` (a dependency every service app runs before its routes)
refuses it in every path, query and header value, declared or not.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, field_validator
from starlette.types import Scope

from bazaar.shared.problem import ValidationFailed

NUL = "\x00"
NUL_MESSAGE = "text must not contain NUL (\\u0000) characters"
NUL_ERROR_TYPE = "string_nul"


def contains_nul(value: Any) -> bool:
    """Answer whether a string, or any key or value nested in `value`, holds a NUL."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False


class InputModel(BaseModel):
    """A request body: extra fields are a 422, and so is a NUL character anywhere in it."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_nul_characters(cls, value: Any) -> Any:
        if contains_nul(value):
            raise ValueError(NUL_MESSAGE)
        return value


def _nul_error(*loc: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": NUL_MESSAGE, "type": NUL_ERROR_TYPE}


def may_hold_nul(scope: Scope) -> bool:
    """Whether the request's path, query or headers may hold a NUL: the cheap test every
    request pays (`refuse_nul_characters`, the fast lane); only then is it looked into."""
    query: bytes = scope.get("query_string", b"")
    return (
        NUL in scope["path"]
        or b"%00" in query
        or b"\x00" in query
        or any(b"\x00" in n or b"\x00" in v for n, v in scope["headers"])
    )


async def refuse_nul_characters(request: Request) -> None:
    """Refuse (422) a request whose path, query or header values hold a NUL character."""
    # Fast path (every request, /healthz and /metrics too): the detailed scan below parses
    # the query and lists every parameter; only a request that may hold a NUL pays for it.
    if not may_hold_nul(request.scope):
        return
    errors = [
        _nul_error("path", name)
        for name, value in request.path_params.items()
        if isinstance(value, str) and NUL in value
    ]
    errors += [
        _nul_error("query", name)
        for name, value in request.query_params.multi_items()
        if NUL in name or NUL in value
    ]
    errors += [
        _nul_error("header", name.decode("latin-1"))
        for name, value in request.headers.raw
        if b"\x00" in value or b"\x00" in name
    ]
    if errors:
        raise ValidationFailed(errors)
