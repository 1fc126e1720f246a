"""Request context: the ids every answer carries, the access log line and the RED metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bazaar.shared.metrics import HttpMetrics, route_template
from bazaar.shared.tracecontext import current_trace_id, request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
TRACE_ID_HEADER = "X-Trace-Id"
#: 1-128 visible ASCII characters (API.md); anything else is replaced.
_VALID_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")

access_log = logging.getLogger("bazaar.access")


def accept_request_id(value: str | None) -> str:
    """Keep a client's request id if it is valid, else make a new one."""
    if value is not None and _VALID_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Sets the request id, echoes it and the trace id, logs the request and records metrics."""

    def __init__(
        self, app: ASGIApp, *, metrics: HttpMetrics, quiet_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.quiet_paths = quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request inside its request-id context."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = accept_request_id(incoming)
        token = request_id_var.set(request_id)
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                trace_id = current_trace_id()
                if trace_id:
                    headers[TRACE_ID_HEADER] = trace_id
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            self.metrics.observe(scope["method"], route, status, elapsed)
            if scope["path"] not in self.quiet_paths:
                access_log.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "http_method": scope["method"],
                        "http_route": route,
                        "http_status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)
