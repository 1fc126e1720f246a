"""Cache-Control directives (RFC 9111 §5.2): what an answer allows a shared cache, and what
a request asks of one."""

from __future__ import annotations

from collections.abc import Iterable

#: Response directives that forbid a shared cache to store (or to reuse without asking).
_NOT_STORED = frozenset({"no-store", "private", "no-cache"})


def directives(values: Iterable[str]) -> dict[str, str | None]:
    """The directives of every Cache-Control field line, names lower-cased; a directive
    given twice keeps its first value (RFC 9111 §4.2.1 leaves it to the cache)."""
    found: dict[str, str | None] = {}
    for value in values:
        for part in value.split(","):
            name, sep, argument = part.strip().partition("=")
            if name:
                found.setdefault(name.lower(), argument.strip().strip('"') if sep else None)
    return found


def shared_lifetime(values: Iterable[str], *, authorized: bool) -> int | None:
    """Seconds a shared cache may keep the answer (`s-maxage`, else `max-age`), or None
    when it must not store it: `no-store`, `private` or `no-cache`, no lifetime given, or a
    request with `Authorization` whose answer does not say it is shared (§3.5)."""
    found = directives(values)
    if not _NOT_STORED.isdisjoint(found):
        return None
    if authorized and "public" not in found and "s-maxage" not in found:
        return None
    for name in ("s-maxage", "max-age"):
        if name in found:
            try:
                seconds = int(found[name] or "")
            except ValueError:
                return None  # an invalid lifetime is a stale answer (§4.2.1)
            return seconds if seconds > 0 else None
    return None


def asks_fresh_fetch(values: Iterable[str]) -> bool:
    """Whether a request's Cache-Control forbids answering it from the cache: `no-cache`,
    `no-store`, or `max-age=0` (a browser's reload)."""
    found = directives(values)
    return "no-cache" in found or "no-store" in found or found.get("max-age") == "0"
