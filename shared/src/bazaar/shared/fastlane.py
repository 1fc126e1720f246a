"""The fast lane: a hot read answered before FastAPI's per-request machinery.

FastAPI's routing, dependency solving and parameter validation cost about 200 µs of the
~350 µs a bare FastAPI route needs per request on our machines, more than the database read
itself. For the few reads that dominate traffic (catalog's `GET /v1/products/{id}`), a
`FastRoute` answers in a pure ASGI layer what it can answer completely: a strict path
pattern, no query string, no NUL anywhere, and a handler that returns the very `Response`
the FastAPI route would (both call the same function). Everything else is handed to the
normal app untouched, so every validation answer and edge case stays FastAPI's:

- the method or path does not match a fast route, or there is a query string or a
  `root_path` (a mounted app: kept simple);
- the request may hold a NUL (`may_hold_nul`, the test `refuse_nul_characters`, the app's
  one dependency, starts with: that dependency answers it);
- the handler returns None, or tries to read the request body (it gets none, so the body
  stays whole for the normal path, which runs the request from the start).

An error the handler raises is answered as the app answers it from a route, never by running
the request again (a pool wait ending in a 503 would be paid twice): the app's own exception
handler for its class (a domain error's problem, 503 database busy, an HTTPException...);
an exception no handler takes is raised on to `ServiceMiddleware`'s backstop, as it would be
from the route (500, or 503 for an outage, logged there). A cancellation propagates as from a
route.

`scope["route"]` is the `APIRoute` the fast route stands in for from the moment its handler
runs (as the router sets it before the endpoint): `ServiceMiddleware` (outside this layer)
labels metrics and the access log with the same route template on every path, a shutdown's
503 included. When FastAPI's native telemetry records the request (traces exported), the
lane names its server span after the route exactly as the router does (FastAPI's own
`_route_selected`), so traced requests take the lane too, with the same span.

A fast route names the route's dependencies its handler solves itself (`solves`); a route
with any other cannot have a fast route (checked when the app is built).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.telemetry._api import _route_selected
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bazaar.shared.schemas import may_hold_nul

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
    #: The route's dependencies the handler resolves itself (e.g. `bazaar.shared.deps.
    #: database`): the app refuses a fast route whose route has any other (an auth check
    #: added to the route later must not be skipped by the lane).
    solves: tuple[Callable[..., object], ...] = ()


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

    def __init__(self, app: ASGIApp, *, routes: Iterable[FastRoute]) -> None:
        self.app = app
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
        if may_hold_nul(scope):
            return False  # `refuse_nul_characters`, the app's one dependency, answers it
        request = Request(scope, _no_body)
        # As the router does before the endpoint runs: metrics, the access log and the
        # server span name the route even if the handler is cancelled (a shutdown's 503).
        scope["route"] = fast.route
        _name_the_span(scope, fast)
        try:
            response = await fast.handler(request, match)
        except _BodyWanted:
            scope.pop("route", None)
            return False
        except Exception as exc:
            handler = _exception_handler(scope, exc)
            if handler is None:
                raise  # to the backstop, as from the route
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        else:
            if response is None:
                scope.pop("route", None)
                return False
        self.answered += 1
        await response(scope, receive, send)
        return True


def _name_the_span(scope: Scope, fast: FastRoute) -> None:
    """Give FastAPI's server span (when it records one) the route, as its router does.

    `_route_selected` is FastAPI's own (private: fastapi is held below 0.166 for it);
    `services/catalog/tests/api/test_product_read_fast_lane.py::
    test_with_traces_exported_the_lane_answers_with_the_routes_server_span` fails if it
    stops naming the span as the router does.
    """
    if scope.get("fastapi.telemetry") is not None:
        _route_selected(scope=scope, path=fast.route.path_format)


ExceptionHandler = Callable[[Request, Exception], Any]


def _exception_handler(scope: Scope, exc: Exception) -> ExceptionHandler | None:
    """The app's handler for `exc` as Starlette's exception middleware finds it: by status
    code for an HTTPException, else by class, the most derived first. None for an exception
    only the catch-all `Exception` handler takes (FastAPI runs that one outside the service
    middleware, after its backstop, which answers instead)."""
    handlers = getattr(scope.get("app"), "exception_handlers", None) or {}
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        handler: ExceptionHandler = handlers[exc.status_code]
        return handler
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            found: ExceptionHandler = handlers[cls]
            return found
    return None
