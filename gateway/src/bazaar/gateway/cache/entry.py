"""A stored answer: what is kept of an upstream's 200, how it is written to Redis, and the
answers (200 or 304) built from it."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from bazaar.gateway.cache.directive import shared_lifetime
from bazaar.shared.etag import if_none_match_matches

#: Never stored: they describe one request (ids, trace, cookies), or the cache writes them.
_PER_REQUEST = frozenset(
    {"x-request-id", "x-trace-id", "traceparent", "tracestate", "age", "cache-status"}
)
#: What a 304 carries of the 200 it stands for (RFC 9110 §15.4.5).
_NOT_MODIFIED_KEEPS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary"}
)
_PROBLEM = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Entry:
    """An upstream's 200: its end-to-end headers, its body, and how long it is fresh."""

    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: Seconds the answer is fresh, counted from when the origin made it.
    lifetime: int

    @property
    def size(self) -> int:
        """Bytes it holds (what the size bounds count)."""
        return len(self.body) + sum(len(k) + len(v) + 4 for k, v in self.headers)

    def encode(self) -> bytes:
        """Its Redis value: the lifetime, the header lines, a blank line, the body."""
        head = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        return b"%d\n%s\r\n%s" % (self.lifetime, head.encode("utf-8", "surrogateescape"), self.body)

    @classmethod
    def decode(cls, value: bytes) -> Entry:
        """The entry `encode` wrote (ValueError if it is not one)."""
        first, _, rest = value.partition(b"\n")
        if rest.startswith(b"\r\n"):  # no header lines (the body may hold blank lines)
            head, body = b"", rest[2:]
        else:
            head, separator, body = rest.partition(b"\r\n\r\n")
            if not separator:
                raise ValueError("not a cache entry")
        lines = head.decode("utf-8", "surrogateescape").split("\r\n") if head else []
        headers = tuple(_header(line) for line in lines)
        return cls(headers, body, int(first))

    def etag(self) -> str | None:
        """Its entity tag, if it has one."""
        for name, value in self.headers:
            if name.lower() == "etag":
                return value
        return None

    def answer(
        self, request: web.Request, own: Mapping[str, str], *, age: float | None
    ) -> web.Response:
        """The answer to `request`: 304 when its If-None-Match names this entry, else 200;
        with `Age` when it was not fetched for this request (`age` given)."""
        condition = request.headers.get("If-None-Match")
        etag = self.etag()
        not_modified = etag is not None and if_none_match_matches(condition, etag)
        headers: CIMultiDict[str] = CIMultiDict(
            (name, value)
            for name, value in self.headers
            if not not_modified or name.lower() in _NOT_MODIFIED_KEEPS
        )
        headers.update(own)
        if age is not None:
            headers["Age"] = str(max(0, math.floor(age)))
        if not_modified:
            return web.Response(status=304, headers=headers)
        return web.Response(status=200, body=self.body, headers=headers)


def shared_for(
    status: int,
    headers: MultiMapping[str],
    length: int | None,
    *,
    whole: bool,
    authorized: bool,
    max_bytes: int,
    max_lifetime: int,
) -> int | None:
    """Seconds the cache may keep an upstream's answer, judged on its head, or None when it
    must not keep it: not a 200 read whole (one over the relay's buffer is streamed), a
    problem, no shared lifetime, cookies, an encoding, a Vary the key does not cover, or too
    large. `headers` are the upstream's own: the gateway's (CORS's `Vary: Origin`, added to
    each answer, the cache's included) are no concern of the origin's answer."""
    if status != 200 or not whole or length is None or length > max_bytes:
        return None
    if (
        "Set-Cookie" in headers
        or "Content-Encoding" in headers
        or headers.get("Content-Type", "").startswith(_PROBLEM)
        or any(v.strip().lower() not in ("", "accept-encoding") for v in headers.getall("Vary", ()))
    ):
        return None
    lifetime = shared_lifetime(headers.getall("Cache-Control", ()), authorized=authorized)
    return None if lifetime is None else min(lifetime, max_lifetime)


def entry_of(
    response: web.StreamResponse, own: Collection[str], lifetime: int, *, max_bytes: int
) -> Entry | None:
    """The entry of a relayed answer `shared_for` allowed (`lifetime`), or None if it was
    not read whole after all or is too large. `own` names the gateway's own headers (not
    stored, nor those describing one request)."""
    if response.prepared or not isinstance(response, web.Response):
        return None
    body = response.body
    if not isinstance(body, bytes):
        return None
    skipped = _PER_REQUEST | {name.lower() for name in own}
    headers = tuple((k, v) for k, v in response.headers.items() if k.lower() not in skipped)
    entry = Entry(headers, body, lifetime)
    return entry if entry.size <= max_bytes else None


def _header(line: str) -> tuple[str, str]:
    name, separator, value = line.partition(": ")
    if not separator:
        raise ValueError("not a header line")
    return name, value
