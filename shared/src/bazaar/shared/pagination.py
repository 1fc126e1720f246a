"""Keyset pagination: opaque cursors, the page shape, query parameters and the Link header."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Protocol, TypeAlias, TypeVar
from uuid import UUID

from fastapi import Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import URL

from bazaar.shared.problem import ValidationFailed

CursorValue: TypeAlias = str | int | float | datetime | UUID | None

T = TypeVar("T")
R = TypeVar("R")


class Keyed(Protocol):
    """What every list sorts by: newest first, ties broken by id."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> UUID: ...


K = TypeVar("K", bound=Keyed)

_VERSION = 1
_SUPPORTED_TYPES: tuple[type, ...] = (str, int, float, datetime, UUID)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class Page(BaseModel, Generic[T]):
    """One page of a list and the cursor of the next (null on the last page)."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PageParams:
    """The page size and the cursor a client asked for."""

    limit: int
    cursor: str | None

    def after(self) -> tuple[datetime, UUID] | None:
        """The (created_at, id) keyset the cursor points after; None on the first page."""
        if self.cursor is None:
            return None
        created_at, item_id = decode_cursor(self.cursor, (datetime, UUID))
        return created_at, item_id

    def answer(
        self, url: str | URL, rows: Sequence[K], read: Callable[[K], BaseModel]
    ) -> JSONResponse:
        """Answer one page of `rows` (fetched newest first, `limit + 1` of them) as `read`
        renders each, with `next_cursor` and the `Link` header of the next page."""
        items, cursor = paginate(rows, self.limit, key=lambda row: (row.created_at, row.id))
        body = {
            "items": [read(row).model_dump(mode="json") for row in items],
            "next_cursor": cursor,
        }
        link = next_link(url, cursor)
        return JSONResponse(body, headers={"Link": link} if link else None)


async def page_params(
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> PageParams:
    """Read `limit` and `cursor` from the query string.

    A coroutine, though it awaits nothing: FastAPI runs a plain function dependency in a
    worker thread, a thread hop on every list request.
    """
    return PageParams(limit=limit, cursor=cursor)


Pagination = Annotated[PageParams, Depends(page_params)]


def encode_cursor(values: Sequence[CursorValue]) -> str:
    """Encode the sort key of a row as an opaque, url-safe cursor."""
    payload = [_VERSION, *(_to_json(value) for value in values)]
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, types: Sequence[type]) -> tuple[Any, ...]:
    """Decode a cursor into one value per type; raise ValidationFailed if it is not ours."""
    unsupported = [typ for typ in types if typ not in _SUPPORTED_TYPES]
    if unsupported:  # a bug in the caller, not in the request
        raise TypeError(f"cursor values cannot be of type {unsupported[0]!r}")
    if not _BASE64URL.fullmatch(cursor):
        raise _invalid_cursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw.decode(), parse_constant=_reject_constant)
    except (binascii.Error, ValueError):  # JSON and UTF-8 errors are ValueErrors
        raise _invalid_cursor() from None
    if (
        not isinstance(payload, list)
        or not payload
        or type(payload[0]) is not int
        or payload[0] != _VERSION
        or len(payload) != len(types) + 1
    ):
        raise _invalid_cursor()
    try:
        return tuple(_from_json(raw, typ) for raw, typ in zip(payload[1:], types, strict=True))
    except ValueError:
        raise _invalid_cursor() from None


def paginate(
    rows: Sequence[R], limit: int, key: Callable[[R], Sequence[CursorValue]]
) -> tuple[list[R], str | None]:
    """Cut `limit + 1` fetched rows to a page and the cursor after it (None on the last page)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    page = list(rows[:limit])
    next_cursor = encode_cursor(key(page[-1])) if len(rows) > limit else None
    return page, next_cursor


def next_link(url: str | URL, next_cursor: str | None) -> str | None:
    """Build the `Link` header value pointing at the next page, or None on the last page.

    The target is a relative reference (path and query, RFC 8288 §3.2): it resolves against
    whatever address the client used, so it stays right behind the gateway.
    """
    if next_cursor is None:
        return None
    target = URL(str(url)).include_query_params(cursor=next_cursor)
    return f'<{target.path}?{target.query}>; rel="next"'


def _to_json(value: CursorValue) -> str | int | float | None:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError("cursor datetimes must be timezone-aware (RFC 3339)")
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if value is None or (isinstance(value, str | int | float) and not isinstance(value, bool)):
        return value
    raise TypeError(f"cursor values cannot be of type {type(value)!r}")


def _from_json(raw: object, typ: type) -> CursorValue:
    if raw is None:
        return None
    if typ is datetime and isinstance(raw, str):
        value = datetime.fromisoformat(raw)
        if value.utcoffset() is not None:
            try:
                # A database stores instants in UTC: one outside its range is no position.
                value.astimezone(UTC)
            except OverflowError as exc:
                raise ValueError("cursor time out of range") from exc
            return value
    elif typ is UUID and isinstance(raw, str):
        return UUID(raw)
    elif typ is str and isinstance(raw, str) and "\x00" not in raw:
        return raw
    elif typ is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    elif typ is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    raise ValueError(f"cursor value {raw!r} is not a {typ.__name__}")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in a cursor")


def _invalid_cursor() -> ValidationFailed:
    return ValidationFailed(
        [
            {
                "loc": ["query", "cursor"],
                "msg": "Invalid cursor: send next_cursor back unchanged, or omit it for page one.",
                "type": "value_error.cursor",
            }
        ]
    )
