"""The gateway's HTTP edge: what aiohttp's parser refuses, heads over the size cap, and
connections that never finish a head, answered as problems (400 `bad-request`, 431
`request-header-fields-too-large`) or closed.

aiohttp answers a request its parser refuses before any application code runs (no
middleware or signal sees it): `RequestHandler.handle_error` renders a text/plain 400 that
quotes the offending bytes and logs a traceback per request. `EdgeRequestHandler` overrides
that method, and `data_received` to bound a head while it arrives (the parser would buffer
up to `max_headers` lines of `max_field_size` bytes each, ~4 MiB, before any total is
taken); `EdgeServer` creates it for each connection and checks each parsed head (its exact
total size, its `Connection` header); `EdgeRunner` is aiohttp's AppRunner serving through
an `EdgeServer`. A connection without a complete head for `keepalive_timeout` seconds
(idle, or sending one slowly) is closed by aiohttp's keep-alive timer.

aiohttp offers no public hook for any of this (aio-libs/aiohttp#3287, #9882): the internals
used are pinned by `aiohttp>=3.14,<3.15` and each is asserted by
`tests/test_gateway_aiohttp_internals.py`, so an upgrade that moves one fails there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import _ErrInfo

from bazaar.gateway.errors import problem
from bazaar.gateway.pipeline import SECURITY_HEADERS
from bazaar.gateway.relay import connection_named
from bazaar.gateway.throttledlog import ThrottledWarning
from bazaar.shared.traceparent import fresh_ids

log = logging.getLogger("bazaar.gateway.edge")

#: What the `Server` header says on every answer the gateway makes itself: no version.
SERVER_NAME = "bazaar-gateway"
#: The request line's limit (aiohttp's default); it must differ from the header cap, so a
#: `LineTooLong` tells which of the two was exceeded.
MAX_REQUEST_LINE_BYTES = 8190
#: Header fields a request may have (aiohttp's default); more are answered 431.
MAX_HEADERS = 128
#: aiohttp's message for a head with more than `max_headers` fields.
_TOO_MANY_HEADERS = "Too many headers received"
#: Headers the gateway itself acts on: a `Connection` header naming one would have it
#: dropped on the way upstream (hop-by-hop), so the upstream would see another request than
#: the one the gateway checked and counted (RFC 9110 §7.6.1: a sender MUST NOT do this).
END_TO_END = frozenset(
    {"authorization", "content-type", "content-length", "content-encoding", "host"}
)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def hide_server_version() -> None:
    """Make aiohttp's default `Server` header name no version (API.md), at no cost per answer.

    aiohttp sets `Server: Python/<v> aiohttp/<v>` on every answer that has none; the default
    is a module constant read when the headers are written, answers to unparsable requests
    included, which no per-response hook reaches.
    """
    web_response: Any = aiohttp.web_response
    web_response.SERVER_SOFTWARE = SERVER_NAME


def refusal(status: int, detail: str) -> web.Response:
    """The problem answer to a request refused at the edge; the connection is closed after."""
    slug, title = _REFUSALS[status]
    ids = fresh_ids()
    response = problem(
        status,
        slug,
        title,
        detail,
        trace_id=ids[:32],
        headers={"X-Request-ID": ids[48:], "X-Trace-Id": ids[:32], **SECURITY_HEADERS},
    )
    response.force_close()
    return response


_REFUSALS = {
    400: ("bad-request", "Bad Request"),
    431: ("request-header-fields-too-large", "Request Header Fields Too Large"),
}


class HeadTooLarge(BadHttpMessage):
    """A head still arriving past the edge's byte bound (raised by no parser: queued)."""

    def __init__(self) -> None:
        super().__init__("request head too large")


def _no_count(_status: int) -> None:
    return None


@dataclass
class Edge:
    """The edge's limits, its count of refusals and its one throttled warning about them."""

    max_header_bytes: int
    keepalive_timeout: float = 75.0
    #: Called with the status of every refusal (the metrics count them).
    counted: Callable[[int], None] = _no_count
    warning: ThrottledWarning = field(default_factory=lambda: ThrottledWarning(log))

    @property
    def max_head_bytes(self) -> int:
        """Bytes a head may take on the wire: request line, the header cap, each line's
        separators; one past this has headers over the cap (or padding) whatever it says."""
        return MAX_REQUEST_LINE_BYTES + self.max_header_bytes + 4 * (MAX_HEADERS + 1)

    def handler_args(self) -> dict[str, float]:
        """aiohttp's parser limits (one header line may be as long as all of them together)
        and the keep-alive timeout (run_app's 75 s, not the 3630 s an AppRunner has)."""
        return {
            "max_field_size": self.max_header_bytes,
            "max_line_size": MAX_REQUEST_LINE_BYTES,
            "max_headers": MAX_HEADERS,
            "keepalive_timeout": self.keepalive_timeout,
        }

    def refused(self, status: int, reason: str, peer: str | None) -> web.Response:
        """Count, log (throttled, no input quoted) and answer one refused request."""
        self.counted(status)
        self.warning.warn("refused malformed requests, latest %s from %s", reason, peer)
        if reason == _TOO_MANY_HEADERS:
            return refusal(431, f"The request has more than {MAX_HEADERS} header fields.")
        if status == 431:
            return refusal(431, f"The request's headers exceed {self.max_header_bytes} bytes.")
        if reason == "Connection":
            return refusal(400, "The Connection header names an end-to-end header.")
        if reason == "CONNECT":
            return refusal(400, "The gateway is no proxy: it serves no CONNECT request.")
        return refusal(400, "The request is not valid HTTP.")

    def guard(self, handler: Handler) -> Handler:
        """Wrap the application's handler with the checks of a parsed head."""
        limit = self.max_header_bytes

        # Not a coroutine: it hands back the handler's own, so no frame is added per request.
        def guarded(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
            total = 0
            for name, value in request.raw_headers:  # a plain loop: cheapest in CPython
                total += len(name) + len(value)
            if total > limit:
                return _ready(self.refused(431, "headers over the cap", request.remote))
            if request.method == "CONNECT":  # a target that is no path: no route, no proxy
                return _ready(self.refused(400, "CONNECT", request.remote))
            if "Connection" in request.headers and not END_TO_END.isdisjoint(
                connection_named(request.headers)
            ):
                return _ready(self.refused(400, "Connection", request.remote))
            return handler(request)

        return guarded


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, but parser errors are the gateway's problems and a
    head is refused once it grows past `Edge.max_head_bytes`, not buffered to its end."""

    __slots__ = ("_body", "_edge", "_head_bytes", "_head_limit", "_head_refused")

    def __init__(self, manager: web.Server, *, edge: Edge, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = edge
        self._head_limit = edge.max_head_bytes
        self._head_bytes = 0  # bytes received since the last complete head, outside bodies
        self._body: StreamReader = EMPTY_PAYLOAD  # the latest request's body
        self._head_refused = False

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does, counting the bytes of a head still incomplete."""
        if self._head_refused:
            return  # read and dropped until the 431 is written and the connection closed
        in_body = not self._body.is_eof()
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # one or more heads completed
            self._head_bytes = 0
            self._body = self._messages[-1][1]
        elif not in_body and not self._upgraded:
            # Bytes after a body's end in the same chunk go uncounted: one chunk at most.
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit:
                self._refuse_head()

    def _refuse_head(self) -> None:
        """Queue a 431 as aiohttp queues a parser error: answered after earlier requests."""
        self._head_refused = True
        self._messages.append((_ErrInfo(status=431, exc=HeadTooLarge(), message=""), EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a request the parser refused: 431 or 400 problem, without its input."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:  # as aiohttp: too late for another answer
            raise ConnectionError("Response is sent already, cannot send another response")
        reason = type(exc).__name__
        # LineTooLong carries the limit it hit: the header cap, or the request line's.
        too_large = isinstance(exc, HeadTooLarge) or (
            isinstance(exc, LineTooLong) and exc.args[1:2] == (self.max_field_size,)
        )
        if isinstance(exc, BadHttpMessage) and exc.args == (_TOO_MANY_HEADERS,):
            too_large, reason = True, _TOO_MANY_HEADERS
        return self._edge.refused(431 if too_large else 400, reason, request.remote)


class EdgeServer(web.Server):
    """aiohttp's server whose connections are `EdgeRequestHandler`s, the head checked."""

    def __init__(self, handler: Handler, *, edge: Edge, **kwargs: Any) -> None:
        super().__init__(edge.guard(handler), **kwargs)
        self._edge = edge

    def __call__(self) -> web.RequestHandler:
        """Make the protocol of one new connection."""
        return EdgeRequestHandler(self, loop=self._loop, edge=self._edge, **self._kwargs)


EDGE = web.AppKey("edge", Edge)


@dataclass(frozen=True)
class Proxy:
    """The app's catch-all resource: its one route (any method) serves every path the
    app's other routes leave to it (the gateway's pipeline)."""

    resource: web.AbstractResource


PROXY = web.AppKey("proxy", Proxy)


def direct(app: web.Application, app_handler: Handler) -> Handler:
    """The app's handler, but a request for no path of the app's other routes goes straight
    to the catch-all's handler, as aiohttp's router would send it, without the route lookup
    and the Application's dispatch in between: the gateway's hot path.

    The paths are read from the app's router, frozen once the app has started (no route can
    be added after); the app's handler is returned as it is when the app has middlewares
    (which only its dispatch runs) or no catch-all of one route for any method.
    """
    if PROXY not in app or app.middlewares:
        return app_handler
    catch_all = app[PROXY].resource
    routes = list(catch_all)
    if len(routes) != 1 or routes[0].method != "*":
        return app_handler
    handler = routes[0].handler
    # Exact paths of plain resources, prefixes (up to a variable part) of the others: a
    # path one of them may serve goes the router's way, which decides as it always does.
    own = [r for r in app.router.resources() if r is not catch_all]
    paths = frozenset(r.canonical for r in own if isinstance(r, web.PlainResource))
    prefixes = tuple(
        r.canonical.split("{", 1)[0] for r in own if not isinstance(r, web.PlainResource)
    )

    def dispatch(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        path = request.path  # decoded: an own route's path matches it whenever it matches
        if path in paths or path.startswith(prefixes):
            return app_handler(request)
        return handler(request)  # type: ignore[arg-type]  # the app makes web.Requests

    return dispatch


class EdgeRunner(web.AppRunner):
    """aiohttp's AppRunner serving the app (which holds its `Edge`) through an `EdgeServer`."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup, merges handler_args
        return EdgeServer(
            direct(self.app, plain.request_handler),
            edge=self.app[EDGE],
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )
