"""The token policy's subject is what auth authenticates: its form parsing, its Basic rule."""

from __future__ import annotations

import base64
import random

import pytest

from bazaar.gateway.ratelimit import token_subject
from bazaar.gateway.ratelimit.tokenkey import NO_SUBJECT

FORM = "application/x-www-form-urlencoded"


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


async def _starlette_form(body: bytes, chunk: int) -> dict[str, list[str]]:
    """The form as auth reads it (Starlette's FormParser over python-multipart)."""
    formparsers = pytest.importorskip("starlette.formparsers")
    datastructures = pytest.importorskip("starlette.datastructures")

    async def stream():
        for start in range(0, len(body), chunk):
            yield body[start : start + chunk]
        yield b""

    headers = datastructures.Headers({"content-type": FORM})
    parsed = await formparsers.FormParser(headers, stream()).parse()
    fields: dict[str, list[str]] = {}
    for name, value in parsed.multi_items():
        fields.setdefault(name, []).append(value)
    return fields


async def test_the_form_is_split_exactly_as_auths_parser_splits_it() -> None:
    from bazaar.gateway.ratelimit.tokenkey import _form

    pieces = [b"&", b"=", b"+", b"%", b"%3D", b"%26", b"%00", b"%e9", b"\xff", b"\xc3\xa9"]
    pieces += [b";", b" ", b"a", b"grant_type", b"password", b"username", b"\x85"]
    chooser = random.Random(12)
    for _ in range(3000):
        body = b"".join(chooser.choice(pieces) for _ in range(chooser.randint(0, 14)))
        for chunk in (1, 5, 4096):  # however the body arrives at auth
            assert _form(body) == await _starlette_form(body, chunk), body


def test_a_password_grant_is_about_the_normalised_username() -> None:
    body = b"grant_type=password&username=+Alice%40Bazaar.TEST+&password=x"
    assert token_subject(body, None) == "alice@bazaar.test"


def test_raw_bytes_that_are_not_utf8_are_read_as_latin1_like_auth_does() -> None:
    body = b"grant_type=password&username=al\xefce%40b.c&password=\xff"
    assert token_subject(body, None) == "al\xefce@b.c"


def test_a_refresh_grant_alone_is_not_about_anyone() -> None:
    assert token_subject(b"grant_type=refresh_token&refresh_token=r", None) is None
    twice = b"grant_type=refresh_token&grant_type=password&username=a&password=b"
    assert token_subject(twice, None) == NO_SUBJECT  # auth refuses it; it still counts


def test_the_basic_header_wins_over_the_forms_client_id() -> None:
    body = b"grant_type=client_credentials&client_id=decoy"
    assert token_subject(body, _basic(b"orders:guess")) == "orders"
    assert token_subject(body, None) == "decoy"


def test_basic_halves_are_form_decoded_as_rfc_6749_says() -> None:
    body = b"grant_type=client_credentials"
    assert token_subject(body, _basic(b"my%20client:s")) == "my client"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer abc", "Basic !!!", _basic(b"no-colon"), _basic(b"\xff\xfe:x"), "Basic \udcff"],
)
def test_a_client_header_auth_refuses_unread_counts_under_no_subject(authorization: str) -> None:
    body = b"grant_type=client_credentials&client_id=decoy&client_secret=x"
    assert token_subject(body, authorization) == NO_SUBJECT


def test_header_bytes_are_seen_as_auth_sees_them() -> None:
    # aiohttp hands the gateway byte 0x85 surrogate-escaped; auth's server decodes it as
    # Latin-1 NEL, which str.strip() removes: auth then authenticates "orders".
    encoded = base64.b64encode(b"orders:guess").decode()
    header = "Basic " + b"\x85".decode("utf-8", "surrogateescape") + encoded
    assert token_subject(b"grant_type=client_credentials", header) == "orders"
