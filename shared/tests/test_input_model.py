"""Request bodies refuse what the database cannot store, naming the field."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from uuid import UUID

import pytest
from pydantic import Field, ValidationError

from bazaar.shared.pagination import decode_cursor, encode_cursor
from bazaar.shared.problem import ValidationFailed
from bazaar.shared.schemas import InputModel


class Line(InputModel):
    note: str


class Body(InputModel):
    name: str
    tags: list[str] = Field(default_factory=list)
    lines: list[Line] = Field(default_factory=list)


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"name": "a\x00b"}, ("name",)),
        ({"name": "ok", "tags": ["fine", "bad\x00"]}, ("tags",)),
        ({"name": "ok", "lines": [{"note": "\x00"}]}, ("lines", 0, "note")),
    ],
)
def test_a_nul_character_anywhere_is_refused_at_its_field(
    payload: dict[str, object], loc: tuple[object, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate(payload)
    assert [e["loc"] for e in caught.value.errors()] == [loc]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"name": "x", "roles": ["admin"]})
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


def test_a_cursor_whose_time_leaves_the_utc_range_is_a_422_not_a_crash() -> None:
    raw = json.dumps([1, "0001-01-01T00:00:00+14:00", "00000000-0000-0000-0000-000000000000"])
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    with pytest.raises(ValidationFailed):
        decode_cursor(cursor, (datetime, UUID))
    # and a normal one still decodes
    assert decode_cursor(encode_cursor(["x"]), (str,)) == ("x",)
