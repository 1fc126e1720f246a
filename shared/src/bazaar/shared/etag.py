"""Entity tags and conditional requests (RFC 9110 §8.8.3 and §13)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator

from bazaar.shared.problem import ProblemError

# A quoted entity tag; its body cannot hold a quote, so every match is bounded (linear time).
_TAG = re.compile(r'(W/)?"([^"]*)"')
_SPACE = " \t"
#: Longer condition headers are not parsed (they never match): no request may buy CPU time.
MAX_HEADER_LENGTH = 8192


class PreconditionRequired(ProblemError):
    """The request must be conditional (send If-Match) and was not."""

    status, slug, title = 428, "precondition-required", "Precondition Required"


class PreconditionFailed(ProblemError):
    """A precondition of the request (If-Match) does not hold for the resource."""

    status, slug, title = 412, "precondition-failed", "Precondition Failed"


def strong_etag(*parts: object) -> str:
    """Derive a quoted strong entity tag from the parts, each taken as its str()."""
    text = json.dumps([str(part) for part in parts], ensure_ascii=False)
    return f'"{hashlib.sha256(text.encode()).hexdigest()[:32]}"'


def if_none_match_matches(header: str | None, etag: str) -> bool:
    """Tell whether If-None-Match names the current representation (weak comparison)."""
    if header is None:
        return False
    own = _parse_tag(etag)
    for member in _members(header):
        if member == "*":
            return True
        if own is not None and isinstance(member, tuple) and member[1] == own[1]:
            return True
    return False


def check_if_match(header: str | None, etag: str) -> None:
    """Raise unless If-Match names the current representation (strong comparison)."""
    if header is None or not header.strip():
        raise PreconditionRequired(
            "This request must be conditional: send If-Match with the ETag from a GET."
        )
    own = _parse_tag(etag)
    for member in _members(header):
        if member == "*":
            return
        if _strong_match(member, own):
            return
    raise PreconditionFailed(
        "The resource has changed since that ETag was issued: GET it again and retry."
    )


def _strong_match(member: tuple[bool, str] | str | None, own: tuple[bool, str] | None) -> bool:
    if not isinstance(member, tuple) or own is None:
        return False
    return not member[0] and not own[0] and member[1] == own[1]


def _parse_tag(text: str) -> tuple[bool, str] | None:
    match = _TAG.fullmatch(text)
    return None if match is None else (match[1] is not None, match[2])


def _members(header: str) -> Iterator[tuple[bool, str] | str | None]:
    """Yield `*`, (is_weak, opaque) or None (unparsable) for each list member, in one pass."""
    if len(header) > MAX_HEADER_LENGTH:
        yield None
        return
    pos, end = 0, len(header)
    while pos < end:
        while pos < end and (header[pos] in _SPACE or header[pos] == ","):
            pos += 1
        if pos == end:
            return
        tag = _TAG.match(header, pos)
        stop = header.find(",", tag.end() if tag else pos)
        stop = end if stop < 0 else stop
        rest = header[tag.end() : stop] if tag else header[pos:stop]
        if tag and not rest.strip(_SPACE):
            yield tag[1] is not None, tag[2]
        else:
            yield "*" if rest.strip(_SPACE) == "*" else None
        pos = stop
