"""Just enough RESP2 for the cache's scripts: a command out, one reply in."""

from __future__ import annotations

import asyncio

from redis.exceptions import InvalidResponse, ResponseError

Reply = bytes | int | None


class NoScript(ResponseError):
    """Redis does not know the script (restarted, or SCRIPT FLUSH): send it whole."""


def command(*words: bytes) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One reply: a bulk string, an integer or nil; Redis's error as ResponseError (NoScript
    for an unknown script), anything else as InvalidResponse (the connection is then out
    of step and must be closed)."""
    line = await reader.readuntil(b"\r\n")
    kind = line[:1]
    try:
        if kind == b"$":
            size = int(line[1:-2])
            return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
        if kind == b":":
            return int(line[1:-2])
    except ValueError as exc:
        raise InvalidResponse(f"unreadable cache script answer: {line!r:.200}") from exc
    if kind == b"-":
        message = line[1:-2].decode("utf-8", "replace")
        raise NoScript(message) if message.startswith("NOSCRIPT") else ResponseError(message)
    raise InvalidResponse(f"unexpected cache script answer: {line!r:.200}")
