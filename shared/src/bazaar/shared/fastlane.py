"""The fast lane: a hot read's plain success answered before FastAPI's per-request machinery.

FastAPI's routing, dependency solving and parameter validation cost about 200 µs of the
~350 µs a bare FastAPI route needs per request on our machines, more than the database read
itself. For the few reads that dominate traffic (catalog's `GET /v1/products/{id}`), a
`FastRoute` answers in a pure ASGI layer what it can answer completely: a strict path
pattern, no query string, no NUL anywhere, and a handler that returns the very `Response`
the FastAPI route would (both call the same function). Everything else is handed to the
normal app untouched, so every error, validation answer and edge case stays FastAPI's and is
identical by construction:

- the method or path does not match a fast route, or there is a query string or a
  `root_path` (a mounted app: kept simple);
- a header name or value holds a NUL (`refuse_nul_characters` answers it; the strict path
  pattern already excludes one from the path);
- FastAPI's native telemetry watches the request (`scope["fastapi.telemetry"]` set): its
  server span takes the route from the router, so a recorded request takes the normal path;
- the handler returns None, or tries to read the request body (it gets none: the body stays
  whole for the normal path).

An error the handler raises is answered as the app answers it from a route, never by running
the request again (a pool wait ending in a 503 would be paid twice): a `ProblemError` or an
error of the service's error map becomes the same problem answer its exception handler gives
(`mapped_problem_response`: 404 not found, 503 database busy...); any other exception is
raised on to `ServiceMiddleware`'s backstop, as it would be from the route (500, or 503 for
an outage, logged there). A cancellation is not an error: it propagates as from a route.

Nothing is sent before the handler has returned, so a decline never follows a started
response. When the lane answers (or raises), `scope["route"]` is the `APIRoute` the fast
route stands in for: `ServiceMiddleware` (outside this layer) labels metrics and the access
log with the same route template either way.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bazaar.shared.errors import mapped_problem_response
from bazaar.shared.problem import ProblemSpec

__all__ = ["FastHandler", "FastLane", "FastRoute", "api_route"]

#: A fast route's handler: its answer, or None to leave the request to the normal app.
FastHandler = Callable[[Request, re.Match[str]], Awaitable[Response | None]]


@dataclass(frozen=True, slots=True)
class FastRoute:
    """One hot read the lane may answer, and the FastAPI route it stands in for."""

    #: The request method, upper case ("GET").
    method: str
    #: Matched against the whole route path (`fullmatch`): keep it strict, anything the
    #: pattern lets through must be a request the handler can answer or decline.
    path: re.Pattern[str]
    #: The FastAPI route serving the same requests (OpenAPI, errors, the fallback).
    route: APIRoute
    handler: FastHandler


def api_route(router: APIRouter, endpoint: Callable[..., object]) -> APIRoute:
    """The route of `router` whose endpoint is `endpoint` (raises when there is none)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            return route
    raise LookupError(f"no route of this router has the endpoint {endpoint.__qualname__}")


class _BodyWanted(Exception):
    """The handler tried to read the request body: the normal path reads it."""


async def _no_body() -> Message:
    raise _BodyWanted


class FastLane:
    """Pure ASGI: answer a fast route's plain success, hand everything else to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[FastRoute],
        error_map: Mapping[type[BaseException], ProblemSpec] | None = None,
    ) -> None:
        self.app = app
        #: The service's domain errors and their problems (as `install_problem_handlers`).
        self.error_map: Mapping[type[BaseException], ProblemSpec] = error_map or {}
        by_method: dict[str, list[FastRoute]] = {}
        for fast in routes:
            by_method.setdefault(fast.method, []).append(fast)
        self._routes = {method: tuple(found) for method, found in by_method.items()}
        #: Requests answered here, and requests a fast route matched but left to `app`
        #: (tests and benchmarks read them; plain ints, no lock: one event loop).
        self.answered = 0
        self.declined = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer here when a fast route can; otherwise run `app` as if this were not here."""
        if scope["type"] == "http":
            candidates = self._routes.get(scope["method"])
            if (
                candidates is not None
                and not scope.get("query_string")
                and not scope.get("root_path")
                and scope.get("fastapi.telemetry") is None
            ):
                path = scope["path"]
                for fast in candidates:
                    match = fast.path.fullmatch(path)
                    if match is not None:
                        if await self._answer(fast, match, scope, receive, send):
                            return
                        self.declined += 1
                        break
        await self.app(scope, receive, send)

    async def _answer(
        self, fast: FastRoute, match: re.Match[str], scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Send the handler's answer (or its error's); False (nothing sent) when it declines."""
        for name, value in scope["headers"]:
            if b"\x00" in value or b"\x00" in name:
                return False
        request = Request(scope, _no_body)
        try:
            response = await fast.handler(request, match)
        except _BodyWanted:
            return False
        except Exception as exc:
            scope["route"] = fast.route
            response = mapped_problem_response(exc, request.url.path, self.error_map)
            if response is None:
                raise  # to the backstop, as from the route
        if response is None:
            return False
        scope["route"] = fast.route
        self.answered += 1
        await response(scope, receive, send)
        return True
