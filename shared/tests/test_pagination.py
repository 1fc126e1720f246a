"""Keyset pagination: cursors, page cutting, the Link header, and a list endpoint."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import URL

from bazaar.shared.pagination import (
    Page,
    Pagination,
    decode_cursor,
    encode_cursor,
    next_link,
    paginate,
)
from bazaar.shared.problem import ProblemError, ValidationFailed

KEY_TYPES = (datetime, UUID)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _raw_cursor(payload: object) -> str:
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _assert_rejected(cursor: str, types: tuple[type, ...] = KEY_TYPES) -> None:
    with pytest.raises(ValidationFailed) as caught:
        decode_cursor(cursor, types)
    [error] = caught.value.extensions["errors"]
    assert error["loc"] == ["query", "cursor"]
    assert error["type"] == "value_error.cursor"
    assert caught.value.status == 422


# --- cursors -----------------------------------------------------------------


def test_a_cursor_round_trips_a_datetime_and_a_uuid() -> None:
    key = (datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=2))), uuid4())
    decoded = decode_cursor(encode_cursor(key), KEY_TYPES)
    assert decoded == key
    assert decoded[0].utcoffset() == timedelta(hours=2)
    assert isinstance(decoded[1], UUID)


def test_a_cursor_round_trips_strings_numbers_and_null() -> None:
    key = ("naïve/näme?&=", 42, 0.1, None)
    assert decode_cursor(encode_cursor(key), (str, int, float, str)) == key


def test_a_cursor_is_url_safe_base64_without_padding() -> None:
    for n in range(6):
        cursor = encode_cursor(["x" * n, "?>/+" * n])
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)


def test_a_cursor_carries_a_version_marker() -> None:
    cursor = encode_cursor([T0, UUID(int=1)])
    padded = cursor + "=" * (-len(cursor) % 4)
    payload = json.loads(base64.urlsafe_b64decode(padded))
    assert payload == [1, "2025-01-01T00:00:00+00:00", str(UUID(int=1))]


def test_a_naive_datetime_cannot_go_into_a_cursor() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_cursor([datetime(2025, 1, 1)])


@pytest.mark.parametrize(
    "cursor",
    ["!!!", "not a cursor", "abc=", "%7B%7D", "a", "AAAA", "////", "e30", "W10", "Wzld"],
)
def test_a_garbage_cursor_is_a_validation_error(cursor: str) -> None:
    _assert_rejected(cursor)


def test_a_truncated_cursor_is_a_validation_error() -> None:
    cursor = encode_cursor([T0, uuid4()])
    for cut in range(1, len(cursor)):
        _assert_rejected(cursor[:cut])


@pytest.mark.parametrize("version", [0, 2, "1", True, None, 1.5])
def test_a_cursor_of_another_version_is_a_validation_error(version: object) -> None:
    _assert_rejected(_raw_cursor([version, T0.isoformat(), str(uuid4())]))


@pytest.mark.parametrize(
    "payload",
    [[1], [1, T0.isoformat()], [1, T0.isoformat(), str(uuid4()), 7]],
)
def test_a_cursor_of_the_wrong_arity_is_a_validation_error(payload: list[Any]) -> None:
    _assert_rejected(_raw_cursor(payload))


@pytest.mark.parametrize(
    "payload",
    [
        [1, "yesterday", str(uuid4())],
        [1, "2025-01-01T00:00:00", str(uuid4())],  # no offset: not RFC 3339
        [1, T0.isoformat(), "not-a-uuid"],
        [1, 1735689600, str(uuid4())],
        [1, T0.isoformat(), 5],
        {"v": 1},
        "1",
    ],
)
def test_a_tampered_cursor_is_a_validation_error(payload: object) -> None:
    _assert_rejected(_raw_cursor(payload))


@pytest.mark.parametrize(
    ("value", "typ"), [("1", int), (True, int), (1.5, int), ("x", float), (3, str)]
)
def test_a_cursor_value_of_the_wrong_json_type_is_a_validation_error(
    value: object, typ: type
) -> None:
    _assert_rejected(_raw_cursor([1, value]), (typ,))


def test_a_cursor_with_nan_is_a_validation_error() -> None:
    raw = base64.urlsafe_b64encode(b"[1,NaN]").rstrip(b"=").decode()
    _assert_rejected(raw, (float,))


def test_decoding_into_an_unsupported_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        decode_cursor(encode_cursor([1]), (bytes,))


# --- paginate ----------------------------------------------------------------


def _key(n: int) -> tuple[int]:
    return (n,)


def test_paginate_with_fewer_rows_than_the_limit_is_the_last_page() -> None:
    assert paginate([1, 2, 3], 5, _key) == ([1, 2, 3], None)


def test_paginate_with_exactly_limit_rows_is_the_last_page() -> None:
    assert paginate([1, 2, 3], 3, _key) == ([1, 2, 3], None)


def test_paginate_with_an_extra_row_cuts_it_and_points_after_the_last_kept_row() -> None:
    page, cursor = paginate([1, 2, 3, 4], 3, _key)
    assert page == [1, 2, 3]
    assert cursor is not None
    assert decode_cursor(cursor, (int,)) == (3,)


def test_paginate_with_no_rows_is_an_empty_last_page() -> None:
    assert paginate([], 3, _key) == ([], None)


# --- next_link ---------------------------------------------------------------


def test_next_link_replaces_the_cursor_and_keeps_the_other_parameters() -> None:
    link = next_link("http://api.test/v1/products?q=red%20hat&cursor=old&limit=5", "NEW")
    assert link is not None
    match = re.fullmatch(r'<(.+)>; rel="next"', link)
    assert match is not None
    url = URL(match[1])
    # A relative reference: it resolves against whatever host the client used (the gateway).
    assert (url.scheme, url.netloc, url.path) == ("", "", "/v1/products")
    assert sorted(httpx.URL(match[1]).params.multi_items()) == [
        ("cursor", "NEW"),
        ("limit", "5"),
        ("q", "red hat"),
    ]


def test_next_link_adds_a_cursor_to_a_url_without_one() -> None:
    assert next_link(URL("http://api.test/v1/orders"), "abc") == (
        '</v1/orders?cursor=abc>; rel="next"'
    )


def test_next_link_on_the_last_page_is_none() -> None:
    assert next_link("http://api.test/v1/orders?cursor=x", None) is None


# --- a list endpoint ---------------------------------------------------------


class ItemRead(BaseModel):
    """One item of the test list."""

    id: UUID
    created_at: datetime


def _sort_key(item: ItemRead) -> tuple[datetime, UUID]:
    return item.created_at, item.id


def _make_items(count: int, start: datetime) -> list[ItemRead]:
    # Three items per timestamp, so the id must break ties.
    return [
        ItemRead(id=uuid4(), created_at=start + timedelta(seconds=n // 3)) for n in range(count)
    ]


def _make_app(store: list[ItemRead]) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(ProblemError)
    async def render_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        body = {"status": exc.status, "slug": exc.slug, "detail": exc.detail, **exc.extensions}
        return JSONResponse(body, status_code=exc.status)

    @app.get("/items", response_model=Page[ItemRead])
    async def list_items(
        page: Pagination, request: Request, response: Response, tag: str | None = None
    ) -> Page[ItemRead]:
        """List items, newest first."""
        rows = sorted(store, key=_sort_key, reverse=True)
        if page.cursor is not None:
            after = decode_cursor(page.cursor, KEY_TYPES)
            rows = [row for row in rows if _sort_key(row) < after]
        items, next_cursor = paginate(rows[: page.limit + 1], page.limit, _sort_key)
        link = next_link(request.url, next_cursor)
        if link is not None:
            response.headers["Link"] = link
        return Page(items=items, next_cursor=next_cursor)

    return app


Client = Callable[[list[ItemRead]], httpx.AsyncClient]


@pytest.fixture
def client() -> Client:
    def make(store: list[ItemRead]) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=_make_app(store))
        return httpx.AsyncClient(transport=transport, base_url="http://api.test")

    return make


async def _walk(
    http: httpx.AsyncClient, limit: int, between_pages: Callable[[], None] = lambda: None
) -> list[str]:
    seen: list[str] = []
    url: str | None = f"/items?limit={limit}"
    while url is not None:
        response = await http.get(url)
        assert response.status_code == 200
        body = response.json()
        seen += [item["id"] for item in body["items"]]
        assert len(body["items"]) <= limit
        assert len(seen) <= 10_000, "the pages never end"
        if body["next_cursor"] is None:
            assert "link" not in response.headers
            url = None
        else:
            link = re.fullmatch(r'<(.+)>; rel="next"', response.headers["link"])
            assert link is not None
            url = link[1]
            assert httpx.URL(url).params["cursor"] == body["next_cursor"]
            between_pages()
    return seen


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
async def test_a_limit_out_of_bounds_answers_422(client: Client, limit: str) -> None:
    async with client(_make_items(3, T0)) as http:
        response = await http.get("/items", params={"limit": limit})
    assert response.status_code == 422


async def test_the_limit_defaults_to_20(client: Client) -> None:
    async with client(_make_items(25, T0)) as http:
        response = await http.get("/items")
    body = response.json()
    assert response.status_code == 200
    assert len(body["items"]) == 20
    assert body["next_cursor"] is not None


async def test_the_limit_bounds_1_and_100_are_allowed(client: Client) -> None:
    async with client(_make_items(150, T0)) as http:
        one = await http.get("/items", params={"limit": 1})
        hundred = await http.get("/items", params={"limit": 100})
    assert len(one.json()["items"]) == 1
    assert len(hundred.json()["items"]) == 100


async def test_a_bad_cursor_answers_422_at_query_cursor(client: Client) -> None:
    async with client(_make_items(3, T0)) as http:
        response = await http.get("/items", params={"cursor": "bm9wZQ"})
    assert response.status_code == 422
    assert response.json()["slug"] == "validation-error"
    assert response.json()["errors"][0]["loc"] == ["query", "cursor"]


async def test_a_cursor_longer_than_512_characters_answers_422(client: Client) -> None:
    async with client(_make_items(3, T0)) as http:
        response = await http.get("/items", params={"cursor": "A" * 513})
    assert response.status_code == 422


@pytest.mark.parametrize("limit", [1, 7, 20, 45, 100])
async def test_walking_every_page_yields_every_item_exactly_once(
    client: Client, limit: int
) -> None:
    store = _make_items(45, T0)
    async with client(store) as http:
        seen = await _walk(http, limit)
    newest_first = sorted(store, key=_sort_key, reverse=True)
    assert seen == [str(item.id) for item in newest_first]


async def test_the_next_link_keeps_the_other_query_parameters(client: Client) -> None:
    async with client(_make_items(5, T0)) as http:
        response = await http.get("/items", params={"limit": 2, "tag": "red"})
    link = re.fullmatch(r'<(.+)>; rel="next"', response.headers["link"])
    assert link is not None
    params = httpx.URL(link[1]).params
    assert (params["limit"], params["tag"]) == ("2", "red")


async def test_items_added_at_the_head_between_pages_are_neither_skipped_nor_repeated(
    client: Client,
) -> None:
    store = _make_items(30, T0)
    original = [str(item.id) for item in sorted(store, key=_sort_key, reverse=True)]
    added: list[ItemRead] = []

    def add_newer_items() -> None:
        newer = _make_items(4, T0 + timedelta(days=1 + len(added)))
        added.extend(newer)
        store.extend(newer)

    async with client(store) as http:
        seen = await _walk(http, 7, add_newer_items)
    assert len(added) > 0
    assert seen == original


async def test_items_added_behind_the_cursor_show_up_on_a_later_page(client: Client) -> None:
    store = _make_items(10, T0)
    older = ItemRead(id=uuid4(), created_at=T0 - timedelta(days=1))
    added: list[ItemRead] = []

    def add_an_older_item() -> None:
        if not added:
            added.append(older)
            store.append(older)

    async with client(store) as http:
        seen = await _walk(http, 3, add_an_older_item)
    assert seen[-1] == str(older.id)
    assert len(seen) == len(set(seen)) == 11
