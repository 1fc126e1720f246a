"""Whom a token request tries to authenticate as, read exactly the way auth reads it.

The "token" policy is only as strong as this agreement: if the gateway counted one name
while auth checked another credential (the form's `client_id` against an HTTP Basic
header), or skipped requests it could not read, a guesser could change what is counted
without changing what is guessed. So the form is split as auth's parser splits it
(Starlette with python-multipart: `&`-separated, raw bytes as Latin-1, then `+` and
`%XX` decoded), the Basic header wins over the form as in auth's `_client_credentials`,
and every request but a refresh grant is counted: one auth will refuse unread still counts
(under the empty subject), so no malformed body can step around the policy.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

#: The subject of token requests that name no credential auth would check.
NO_SUBJECT = ""


def token_subject(body: bytes | bytearray | None, authorization: str | None) -> str | None:
    """The "token" policy's subject: username or client id; None for a refresh grant."""
    form = _form(body or b"")
    grant = form.get("grant_type")
    if grant == ["refresh_token"]:
        return None  # API.md: refresh grants count only against the address policy
    if grant == ["password"]:
        username = form.get("username")
        # auth's email_key: the account whose failed logins auth throttles.
        return username[0].strip().lower() if username and len(username) == 1 else NO_SUBJECT
    if grant == ["client_credentials"]:
        if authorization is not None:  # auth checks the header, whatever the form says
            return _basic_client_id(authorization)
        client_id = form.get("client_id")
        return client_id[0] if client_id and len(client_id) == 1 else NO_SUBJECT
    return NO_SUBJECT


def _form(body: bytes | bytearray) -> dict[str, list[str]]:
    """Split a urlencoded body as Starlette's FormParser does (never fails)."""
    fields: dict[str, list[str]] = {}
    for chunk in body.split(b"&"):
        if not chunk:
            continue
        name, _, value = chunk.partition(b"=")
        decoded = unquote_plus(name.decode("latin-1"))
        fields.setdefault(decoded, []).append(unquote_plus(value.decode("latin-1")))
    return fields


def _basic_client_id(authorization: str) -> str:
    """The client id auth takes from an `Authorization` header (RFC 6749 §2.3.1)."""
    # aiohttp decodes header bytes as UTF-8 (surrogate-escaped), uvicorn as Latin-1: undo
    # the one to see the other, so stray bytes are stripped or refused as auth does.
    header = authorization.encode("utf-8", "surrogateescape").decode("latin-1")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return NO_SUBJECT
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text; auth refuses it too
        return NO_SUBJECT
    raw_id, sep, _ = decoded.partition(":")
    return unquote_plus(raw_id) if sep else NO_SUBJECT
