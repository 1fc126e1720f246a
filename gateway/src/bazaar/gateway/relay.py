"""Relaying an upstream's answer to the client: small ones read whole, large ones streamed.

A small answer is read by the route's deadline. A streamed one (no length, or a large one:
Server-Sent Events, downloads) runs as long as the upstream keeps sending: it is cut only
when the upstream sends nothing for `idle_seconds` while the gateway waits for it; time
spent writing to a slow client is never counted against the upstream.

Each chunk is written to the client as soon as it arrives (aiohttp hands it to the socket
at once, Nagle off; the gateway never compresses), so an event is never held back. An
event stream ends cleanly (its last chunk, then the connection closes) when its `stream`
slot is `ending` (the replica shuts down): the client sees the end of the stream, not a
reset, and reconnects with `Last-Event-ID`, to another replica.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from bazaar.gateway.admission import StreamSlot
from bazaar.gateway.errors import BadGateway, UpstreamTimeout

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded (nor those that
# the Connection header names).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# aiohttp sets the length it sends; clients see the gateway's own Server, never a service's.
_NOT_RELAYED = HOP_BY_HOP | {"content-length", "server"}
#: Answers up to this size are read whole (faster); larger ones are streamed chunk by chunk.
BUFFER_LIMIT = 64 * 1024
CHUNK = 64 * 1024
#: An upstream's 500 problem is read this far for its trace id, no further.
PROBLEM_LIMIT = 16 * 1024
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_BROKEN = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)


#: Shown an upstream's answer head (its status and its own headers, before the gateway's are
#: added) and whether its body is to be read whole (else streamed), before either happens;
#: it answers True to relay the head alone, the body left unread. Set for one forward by
#: the response cache (`bazaar.gateway.cache.serve`), which judges there whether the answer
#: can be shared and answers a client's HEAD that it fetched with GET.
AnswerHead = Callable[[aiohttp.ClientResponse, bool], bool]
ANSWER_HEAD: ContextVar[AnswerHead | None] = ContextVar("answer_head", default=None)


class BrokenOff(Exception):
    """The upstream broke off (`kind`: reset or timeout) once the answer was under way; the
    client's connection has been cut, which is all that is left to tell it."""

    def __init__(self, kind: str, response: web.StreamResponse) -> None:
        super().__init__(f"the upstream's answer broke off ({kind})")
        self.kind = kind
        self.response = response


def connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """The (lower-case) header names the `Connection` header lists: hop-by-hop too."""
    if "Connection" not in headers:
        return frozenset()
    return frozenset(
        token.strip().lower()
        for value in headers.getall("Connection")
        for token in value.split(",")
    )


def is_problem(upstream: aiohttp.ClientResponse) -> bool:
    """Whether the answer is an RFC 9457 problem."""
    return upstream.content_type == "application/problem+json"


async def problem_trace_id(upstream: aiohttp.ClientResponse, deadline: float) -> str | None:
    """The `trace_id` of an upstream's problem answer (read by `deadline`), if it has a
    well-formed one."""
    raw = b""
    try:
        async with asyncio.timeout_at(deadline):
            while len(raw) < PROBLEM_LIMIT:  # read(n) gives what has arrived: read to the end
                chunk = await upstream.content.read(PROBLEM_LIMIT - len(raw))
                if not chunk:
                    break
                raw += chunk
        if not raw.lstrip().startswith(b"{"):
            return None  # not an object: no trace_id, and nothing deep to parse
        document = json.loads(raw)
    except (TimeoutError, *_BROKEN, ValueError, RecursionError):
        # RecursionError: 16 KiB of nesting ({"a":{"a":…) is too deep for json.loads.
        return None
    trace_id = document.get("trace_id") if isinstance(document, dict) else None
    if isinstance(trace_id, str) and _TRACE_ID.fullmatch(trace_id):
        return trace_id
    return None


def _answer_headers(
    target: CIMultiDict[str], upstream: aiohttp.ClientResponse, extra: Mapping[str, str]
) -> None:
    """Copy the upstream's end-to-end headers (not its length) and the gateway's own."""
    source = upstream.headers
    named = connection_named(source)
    for name, value in source.items():
        lowered = name.lower()
        if lowered in _NOT_RELAYED or (named and lowered in named):
            continue
        target.add(name, value)
    target.update(extra)


async def relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    extra: Mapping[str, str],
    name: str,
    *,
    deadline: float,
    idle_seconds: float,
    stream: StreamSlot | None = None,
) -> web.StreamResponse:
    """The client's answer: BadGateway/UpstreamTimeout while none is sent yet; BrokenOff
    when the upstream fails or idles mid-stream; a client gone mid-stream just ends it.
    An event `stream` is never read whole, and ends cleanly once its slot is `ending`."""
    length = upstream.content_length
    whole = length is not None and length <= BUFFER_LIMIT and stream is None
    watch = ANSWER_HEAD.get()
    if watch is not None and watch(upstream, whole):
        head = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        _answer_headers(head.headers, upstream, extra)
        if length is not None:
            head.content_length = length
        return head  # unprepared, its body unread (the connection is closed, not reused)
    if whole:
        try:
            if upstream.content.is_eof():  # all of it came with the head: no timer needed
                body = await upstream.read()
            else:
                async with asyncio.timeout_at(deadline):
                    body = await upstream.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {name} service stalled mid-answer.") from exc
        except _BROKEN as exc:
            raise BadGateway(f"The {name} service broke off its answer.") from exc
        answer = web.Response(status=upstream.status, reason=upstream.reason, body=body)
        _answer_headers(answer.headers, upstream, extra)
        return answer
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    _answer_headers(response.headers, upstream, extra)
    if length is not None:
        response.content_length = length
    try:
        await response.prepare(request)
        content = upstream.content
        while stream is None or not stream.ending:
            try:
                chunk = content.read_nowait(CHUNK)  # what has arrived: no timer needed
                if not chunk and not content.at_eof():
                    if stream is None:
                        async with asyncio.timeout(idle_seconds):  # waiting on the upstream
                            chunk = await content.read(CHUNK)
                    else:
                        event = await _next_event(content, idle_seconds, stream)
                        if event is None:
                            break
                        chunk = event
            except (TimeoutError, *_BROKEN) as exc:
                # The status line is gone: the only honest signal left is to cut the
                # connection, so the client sees an incomplete answer, not a complete one.
                if request.transport is not None:
                    request.transport.abort()
                kind = "idle" if isinstance(exc, TimeoutError) else "reset"
                raise BrokenOff(kind, response) from exc
            if not chunk:
                break
            await response.write(chunk)  # a slow client holds this, never the upstream's clock
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away: nobody is left to answer, and the upstream did no wrong
    return response


async def _next_event(
    content: aiohttp.StreamReader, idle_seconds: float, stream: StreamSlot
) -> bytes | None:
    """The stream's next bytes (TimeoutError after `idle_seconds` without any), or None
    when the stream is to end (the wait is cut short by `StreamSlot.end`)."""
    try:
        async with asyncio.timeout(idle_seconds) as timer:
            stream.timer = timer
            try:
                return await content.read(CHUNK)
            finally:
                stream.timer = None
    except TimeoutError:
        if stream.ending:
            return None
        raise
