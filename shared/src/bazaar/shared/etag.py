"""Entity tags and conditional requests (RFC 9110 §8.8.3 and §13)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator

from bazaar.shared.problem import ProblemError

# One member of an entity-tag list and the comma after it; a member that is not
# `*` or a quoted tag lands in `other` and never matches.
_MEMBER = re.compile(r'\s*(?:(?P<weak>W/)?"(?P<opaque>[^"]*)"|(?P<other>[^,]*?))\s*(?:,|\Z)')


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
    match = _MEMBER.fullmatch(text)
    if match is None or match["opaque"] is None:
        return None
    return match["weak"] is not None, match["opaque"]


def _members(header: str) -> Iterator[tuple[bool, str] | str | None]:
    """Yield `*`, (is_weak, opaque) or None (unparsable) for each list member."""
    pos = 0
    while pos < len(header):
        match = _MEMBER.match(header, pos)
        if match is None:  # unreachable: `other` matches up to the next comma or the end
            return
        pos = match.end()
        if match["opaque"] is not None:
            yield match["weak"] is not None, match["opaque"]
        else:
            yield "*" if match["other"] == "*" else None
