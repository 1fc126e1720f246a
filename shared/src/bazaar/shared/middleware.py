"""The one middleware of every service: what each request gets before and after its route.

In one pure ASGI layer (each layer costs every request a few microseconds of calls):
the request id (kept from the client when valid) and the trace (continued from an
incoming `traceparent` or started, unless a recording server span already did),
`X-Request-ID` and `X-Trace-Id` on the answer, the 413 for an oversized body, the
backstop answering what no handler took (503 for an outage, else 500), the 503 of a
request cut short by a shutdown, the RED metrics and the access log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bazaar.shared.bodylimit import declared_too_large, limited, refuse
from bazaar.shared.errors import answer_unhandled, error_response
from bazaar.shared.metrics import HttpMetrics, route_template
from bazaar.shared.problem import PayloadTooLarge, ServiceUnavailable
from bazaar.shared.telemetry import attach_ids, detach
from bazaar.shared.tracecontext import current_trace_id, request_id_var
from bazaar.shared.traceparent import continue_or_start, fresh_ids

REQUEST_ID_HEADER = "X-Request-ID"
TRACE_ID_HEADER = "X-Trace-Id"
#: The `Server` header of every answer: no software, no version (the HTTP server would
#: name itself otherwise; granian cannot be told to send none).
SERVER_HEADER = (b"server", b"bazaar")
_REQUEST_ID, _TRACE_ID = REQUEST_ID_HEADER.lower().encode(), TRACE_ID_HEADER.lower().encode()
_OWN_HEADERS = (_REQUEST_ID, _TRACE_ID, SERVER_HEADER[0])
#: 1-128 visible ASCII characters (API.md); anything else is replaced.
_VALID_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")

access_log = logging.getLogger("bazaar.access")


class RequestsInFlight:
    """The tasks serving requests now, for a shutdown to cut short those it will not wait for."""

    __slots__ = ("cut", "tasks")

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Set by `cut_short`: a request cancelled from then on is answered 503.
        self.cut = False

    def __len__(self) -> int:
        return len(self.tasks)

    def cut_short(self) -> int:
        """Cancel every request still running (a shutdown's grace ended); how many."""
        self.cut = True
        tasks = tuple(self.tasks)
        for task in tasks:
            task.cancel()
        return len(tasks)


#: The detail of the 503 answering a request that a shutdown cut short.
SHUTTING_DOWN = "The service is shutting down; retry the request."


def accept_request_id(value: str | None, fresh: str | None = None) -> str:
    """Keep a client's request id if it is valid, else `fresh` (or a new random one)."""
    if value is not None and _VALID_REQUEST_ID.match(value):
        return value
    return fresh or fresh_ids()[48:]


class ServiceMiddleware:
    """Ids, trace, body limit, backstop, metrics and access log of every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        max_bytes: int,
        quiet_paths: frozenset[str] = frozenset(),
        start_traces: bool = True,
        in_flight: RequestsInFlight | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes
        #: Probes and scrapes: neither logged nor traced.
        self.quiet_paths = quiet_paths
        #: Continue or start the trace here (False when a recording server span does it).
        self.start_traces = start_traces
        #: The tasks serving requests now (cut short when a shutdown's grace runs out).
        self.in_flight = RequestsInFlight() if in_flight is None else in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request inside its request-id and trace context."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given_id = traceparent = content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given_id = value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value
        ids = fresh_ids()  # one system call for the new trace, span and request ids
        request_id = accept_request_id(given_id, ids[48:])
        token = request_id_var.set(request_id)
        quiet = scope["path"] in self.quiet_paths
        trace_token = None
        if not self.start_traces:
            trace_id = current_trace_id()  # the server span's, when the path is traced
        elif quiet:
            trace_id = None
        else:
            trace = continue_or_start(traceparent, ids)
            trace_token = attach_ids(trace)
            trace_id = trace.trace_id
        own = [SERVER_HEADER, (_REQUEST_ID, request_id.encode("latin-1"))]
        if trace_id is not None:
            own.append((_TRACE_ID, trace_id.encode("latin-1")))
        status = 500
        started = False

        async def send_with_ids(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0] not in _OWN_HEADERS),
                    *own,
                ]
            await send(message)

        metrics = self.metrics
        metrics.active.inc()
        task = asyncio.current_task()
        running = self.in_flight.tasks
        if task is not None:
            running.add(task)
        try:
            if declared_too_large(content_length, self.max_bytes):
                await refuse(scope, receive, send_with_ids, self.max_bytes)
            else:
                try:
                    await self.app(scope, limited(receive, self.max_bytes), send_with_ids)
                except PayloadTooLarge:
                    if started:
                        raise
                    await refuse(scope, receive, send_with_ids, self.max_bytes)
                except Exception as exc:
                    await answer_unhandled(exc, scope, receive, send_with_ids, started=started)
                except asyncio.CancelledError:
                    if started or not self.in_flight.cut:
                        raise
                    # Cut short by a shutdown: the client is told to retry (elsewhere), on
                    # a connection not kept, rather than getting the server's bare 500.
                    response = error_response(
                        ServiceUnavailable(SHUTTING_DOWN, headers={"Connection": "close"}), scope
                    )
                    await response(scope, receive, send_with_ids)
                    if task is not None:
                        task.uncancel()  # answered: the request ends here, not as an error
        finally:
            if task is not None:
                running.discard(task)
            metrics.active.dec()
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            metrics.observe(scope["method"], route, status, elapsed)
            if not quiet and access_log.isEnabledFor(logging.INFO):
                _log_access(scope, route, status, elapsed)
            request_id_var.reset(token)
            if trace_token is not None:
                detach(trace_token)


def _log_access(scope: Scope, route: str, status: int, elapsed: float) -> None:
    """The access line: built directly (no caller lookup; it always comes from here)."""
    method = scope["method"]
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        "%s %s %s",
        (method, scope["path"], status),
        None,
        extra={
            "http_method": method,
            "http_route": route,
            "http_status": status,
            "duration_ms": round(elapsed * 1000, 2),
        },
    )
    access_log.handle(record)
