"""The fast lane alone: what it answers, what it leaves to the app, and where the factory puts it.

A request the lane declines must reach the app exactly as if the lane were not there:
nothing sent before, the same scope (no route set), the same receive channel, the body
unread. Its answers carry the route the FastAPI app would have matched.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, ClassVar

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from prometheus_client.parser import text_string_to_metric_families
from pydantic_settings import SettingsConfigDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from bazaar.shared.app import create_service_app
from bazaar.shared.auth import VerifierSettings
from bazaar.shared.dbfailure import DatabaseBusy
from bazaar.shared.errors import install_problem_handlers
from bazaar.shared.fastlane import FastLane, FastRoute, api_route
from bazaar.shared.middleware import ServiceMiddleware
from bazaar.shared.problem import ProblemSpec
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.testing.asgi import serve_in_process

ITEM = "/items/3f2c1e9a-7b1d-4c55-9a0e-2d4b6f8a1c3e"
#: Nothing listens on port 1 (the pool opens without connecting: db_pool_min=0).
UNREACHABLE_DATABASE_URL = "postgresql://postgres@127.0.0.1:1/nowhere"

router = APIRouter()


@router.get("/items/{item_id}")
async def get_item(item_id: str) -> PlainTextResponse:
    """The FastAPI route the fast route stands in for."""
    return PlainTextResponse(f"route {item_id}")


@router.get("/other")
async def other() -> PlainTextResponse:
    """A route of the same router with no fast lane."""
    return PlainTextResponse("other")


ITEM_ROUTE = api_route(router, get_item)
ITEM_PATH = re.compile(r"/items/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


async def answer_item(request: Request, match: re.Match[str]) -> Response | None:
    """Answer `fast <id>`, or decline the id `decline`-looking one (all zeros)."""
    if match[1].startswith("00000000"):
        return None
    return PlainTextResponse(f"fast {match[1]}")


class Inner:
    """The app behind the lane: records what reached it and answers `inner`."""

    def __init__(self) -> None:
        self.calls: list[tuple[Scope, Receive]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((dict(scope), receive))
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await PlainTextResponse(b"inner " + body)(scope, receive, send)


def http_scope(
    path: str = ITEM,
    *,
    method: str = "GET",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    **extra: Any,
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": headers if headers is not None else [(b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
        **extra,
    }


class Wire:
    """A request's receive channel (one body message) and what was sent back."""

    def __init__(self, body: bytes = b"") -> None:
        self.sent: list[Message] = []
        self._messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive(self) -> Message:
        if self._messages:
            return self._messages.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def lane_with(*, handler: Any = answer_item) -> tuple[FastLane, Inner]:
    inner = Inner()
    return FastLane(inner, routes=[FastRoute("GET", ITEM_PATH, ITEM_ROUTE, handler)]), inner


async def test_a_matching_read_is_answered_by_the_handler_with_the_route_set() -> None:
    lane, inner = lane_with()
    scope, wire = http_scope(), Wire()

    await lane(scope, wire.receive, wire.send)

    assert wire.sent[0]["status"] == 200
    assert wire.body == b"fast 3f2c1e9a-7b1d-4c55-9a0e-2d4b6f8a1c3e"
    assert scope["route"] is ITEM_ROUTE  # metrics and the access log read its template
    assert not inner.calls
    assert (lane.answered, lane.declined) == (1, 0)


@pytest.mark.parametrize(
    ("scope", "matched"),
    [
        (http_scope(method="POST"), False),
        (http_scope(method="HEAD"), False),
        (http_scope("/items/3F2C1E9A-7B1D-4C55-9A0E-2D4B6F8A1C3E"), False),
        (http_scope(ITEM + "/"), False),
        (http_scope(ITEM + "x"), False),
        (http_scope("/v2" + ITEM), False),
        (http_scope("/items/3f2c1e9a7b1d4c559a0e2d4b6f8a1c3e"), False),
        (http_scope("/other"), False),
        (http_scope(query=b"x=1"), False),
        (http_scope(query=b"%00"), False),
        (http_scope(root_path="/catalog"), False),
        (http_scope(headers=[(b"host", b"test"), (b"x-note", b"a\x00b")]), True),
        (http_scope(headers=[(b"host", b"test"), (b"x-\x00", b"b")]), True),
        (http_scope("/items/00000000-0000-0000-0000-000000000000"), True),
    ],
    ids=[
        "post",
        "head",
        "pattern-case",
        "trailing-slash",
        "suffix",
        "prefix",
        "unhyphenated",
        "another-path",
        "query-string",
        "nul-in-query",
        "root-path",
        "nul-in-header-value",
        "nul-in-header-name",
        "handler-declines",
    ],
)
async def test_a_declined_request_reaches_the_app_as_if_the_lane_were_not_there(
    scope: Scope, matched: bool
) -> None:
    lane, inner = lane_with()
    before = dict(scope)
    wire = Wire(b"the body")

    await lane(scope, wire.receive, wire.send)

    [(seen, receive)] = inner.calls
    assert seen == before, "the scope reached the app unchanged (no route set)"
    assert receive == wire.receive
    assert wire.body == b"inner the body", "nothing sent before; the body unread"
    assert [m["type"] for m in wire.sent] == ["http.response.start", "http.response.body"]
    assert (lane.answered, lane.declined) == (0, int(matched))


class ShelfMissing(LookupError):
    """A domain error of the service's error map."""


ERROR_MAP = {ShelfMissing: ProblemSpec(404, "not-found", "Not Found")}


def app_with_handlers() -> FastAPI:
    """An app with the services' exception handlers (Starlette puts it in `scope["app"]`)."""
    app = FastAPI()
    install_problem_handlers(app, ERROR_MAP)
    return app


def failing_lane(error: Exception) -> tuple[FastLane, Inner]:
    async def failing(request: Request, match: re.Match[str]) -> Response | None:
        assert request.scope["route"] is ITEM_ROUTE, "set before the handler, as the router does"
        raise error

    return lane_with(handler=failing)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ShelfMissing("No shelf 7."), 404),
        (DatabaseBusy(), 503),
        (HTTPException(410, "Gone for good."), 410),
    ],
    ids=["domain-error", "database-busy", "http-exception"],
)
async def test_an_error_the_app_handles_is_answered_here_by_its_handler(
    error: Exception, status: int
) -> None:
    lane, inner = failing_lane(error)
    app = app_with_handlers()
    scope, wire = http_scope(app=app), Wire(b"the body")

    await lane(scope, wire.receive, wire.send)

    handlers = app.exception_handlers
    handler = next(handlers[cls] for cls in type(error).__mro__ if cls in handlers)
    expected = await handler(Request(http_scope(app=app)), error)
    assert not inner.calls, "not run again by the app (a pool wait would be paid twice)"
    assert wire.sent[0]["status"] == status
    assert wire.body == expected.body
    assert wire.sent[0]["headers"] == expected.raw_headers
    assert scope["route"] is ITEM_ROUTE
    assert (lane.answered, lane.declined) == (1, 0)


@pytest.mark.parametrize(
    ("error", "app"),
    [
        (RuntimeError("a bug"), app_with_handlers()),
        (ValueError("bad"), app_with_handlers()),
        (LookupError("not a domain error"), app_with_handlers()),
        (ShelfMissing("no app in the scope"), None),
    ],
    ids=["runtime-error", "value-error", "lookup-error", "no-app"],
)
async def test_an_error_no_handler_takes_goes_on_to_the_backstop_with_the_route_set(
    error: Exception, app: FastAPI | None
) -> None:
    lane, inner = failing_lane(error)
    scope, wire = http_scope(**({"app": app} if app else {})), Wire(b"the body")

    with pytest.raises(type(error)) as raised:
        await lane(scope, wire.receive, wire.send)

    assert raised.value is error
    assert not inner.calls
    assert not wire.sent, "nothing sent: the backstop answers (500, or 503 for an outage)"
    assert scope["route"] is ITEM_ROUTE, "metrics and the access log name the route"


async def test_a_handler_reading_the_body_falls_through_with_the_body_unread() -> None:
    async def greedy(request: Request, match: re.Match[str]) -> Response | None:
        return PlainTextResponse(await request.body())

    lane, inner = lane_with(handler=greedy)
    wire = Wire(b"the body")

    await lane(http_scope(), wire.receive, wire.send)

    assert len(inner.calls) == 1
    assert wire.body == b"inner the body"


async def test_a_cancellation_in_the_handler_is_not_a_decline() -> None:
    async def cancelled(request: Request, match: re.Match[str]) -> Response | None:
        raise asyncio.CancelledError

    lane, inner = lane_with(handler=cancelled)
    scope, wire = http_scope(), Wire()

    with pytest.raises(asyncio.CancelledError):
        await lane(scope, wire.receive, wire.send)

    assert not inner.calls
    assert not wire.sent
    # A shutdown's 503 (ServiceMiddleware) is counted and logged under the route.
    assert scope["route"] is ITEM_ROUTE


async def test_other_scope_types_pass_through() -> None:
    lane, inner = lane_with()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    wire = Wire()

    await lane(scope, wire.receive, wire.send)

    assert inner.calls == [(scope, wire.receive)]


def test_api_route_finds_a_route_by_its_endpoint_or_refuses() -> None:
    assert ITEM_ROUTE.path == "/items/{item_id}"
    assert api_route(router, other).path == "/other"
    with pytest.raises(LookupError):
        api_route(router, answer_item)


# --- in the app factory ---------------------------------------------------------------------


class LaneSettings(ServiceSettings):
    """Settings of the throwaway service these tests build."""

    model_config = SettingsConfigDict(env_prefix="LANESVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "lane"


def lane_app(
    verifier_settings: VerifierSettings, *fast: FastRoute, routers: list[APIRouter] | None = None
) -> FastAPI:
    settings = LaneSettings(
        _env_file=None,
        environment="test",
        database_url=UNREACHABLE_DATABASE_URL,
        db_pool_min=0,
        jwt_jwks_url=verifier_settings.jwks_url,
        jwt_issuer=verifier_settings.issuer,
        jwt_audience=verifier_settings.audience,
    )
    return create_service_app(
        settings,
        title="Lane",
        description="A throwaway service for the fast lane's tests.",
        routers=routers or [router],
        error_map={},
        fast_routes=fast,
    )


def stack_of(app: FastAPI) -> list[object]:
    """The app's middleware stack, outermost first (built once the app has started)."""
    layers: list[object] = []
    node: object = app.middleware_stack
    while node is not None:
        layers.append(node)
        node = getattr(node, "app", None)
    return layers


async def test_the_factory_puts_the_lane_inside_the_service_middleware(
    verifier_settings: VerifierSettings,
) -> None:
    app = lane_app(verifier_settings, FastRoute("GET", ITEM_PATH, ITEM_ROUTE, answer_item))

    async with serve_in_process(app) as client:
        fast = await client.get(ITEM, headers={"X-Request-ID": "lane-1"})
        declined = await client.get("/items/00000000-0000-0000-0000-000000000000")
        metrics = (await client.get("/metrics")).text

    kinds = [type(layer) for layer in stack_of(app)]
    assert kinds.index(ServiceMiddleware) + 1 == kinds.index(FastLane)
    assert fast.text == "fast 3f2c1e9a-7b1d-4c55-9a0e-2d4b6f8a1c3e"
    assert fast.headers["X-Request-ID"] == "lane-1"
    assert "X-Trace-Id" in fast.headers
    assert declined.text == "route 00000000-0000-0000-0000-000000000000"
    counts = {
        (s.labels["http_route"], s.labels["http_response_status_code"]): s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "http_server_request_duration_seconds_count"
    }
    assert counts[("/items/{item_id}", "200")] == 2  # the lane's answer and the route's


async def test_without_fast_routes_there_is_no_lane(verifier_settings: VerifierSettings) -> None:
    app = lane_app(verifier_settings)

    async with serve_in_process(app) as client:
        assert (await client.get(ITEM)).text == "route 3f2c1e9a-7b1d-4c55-9a0e-2d4b6f8a1c3e"

    assert FastLane not in [type(layer) for layer in stack_of(app)]


def test_a_fast_route_must_stand_in_for_a_route_of_the_app(
    verifier_settings: VerifierSettings,
) -> None:
    stray = APIRouter()

    @stray.get("/items/{item_id}")
    async def elsewhere(item_id: str) -> str:
        return item_id

    with pytest.raises(ValueError, match="not in `routers`"):
        lane_app(
            verifier_settings, FastRoute("GET", ITEM_PATH, api_route(stray, elsewhere), answer_item)
        )
    with pytest.raises(ValueError, match="takes no POST"):
        lane_app(verifier_settings, FastRoute("POST", ITEM_PATH, ITEM_ROUTE, answer_item))


def test_a_fast_route_must_not_stand_in_for_a_route_with_dependencies(
    verifier_settings: VerifierSettings,
) -> None:
    async def deny() -> None:
        raise HTTPException(403)

    guarded = APIRouter(dependencies=[Depends(deny)])

    @guarded.get("/items/{item_id}")
    async def guarded_item(item_id: str) -> str:
        return item_id

    with pytest.raises(ValueError, match=r"has dependencies the lane does not solve: .*deny"):
        lane_app(
            verifier_settings,
            FastRoute("GET", ITEM_PATH, api_route(guarded, guarded_item), answer_item),
            routers=[guarded],
        )


async def deny_all() -> None:
    """A dependency guarding a route (module level: annotations resolve in the globals)."""
    raise HTTPException(403)


async def pool() -> str:
    """A dependency a fast route's handler can solve itself."""
    return "pool"


def test_a_parameter_dependency_must_be_one_the_fast_route_solves(
    verifier_settings: VerifierSettings,
) -> None:
    own = APIRouter()

    @own.get("/items/{item_id}")
    async def checked_item(
        item_id: str, _: Annotated[None, Depends(deny_all)], db: Annotated[str, Depends(pool)]
    ) -> str:
        return item_id

    route = api_route(own, checked_item)
    with pytest.raises(ValueError, match=r"does not solve: deny_all$"):
        lane_app(
            verifier_settings,
            FastRoute("GET", ITEM_PATH, route, answer_item, solves=(pool,)),
            routers=[own],
        )
    with pytest.raises(ValueError, match=r"does not solve: .*deny_all"):
        lane_app(verifier_settings, FastRoute("GET", ITEM_PATH, route, answer_item), routers=[own])
    lane_app(
        verifier_settings,
        FastRoute("GET", ITEM_PATH, route, answer_item, solves=(pool, deny_all)),
        routers=[own],
    )


class Teapot(Exception):
    """An error a plain-function handler answers."""


async def test_handlers_are_found_as_starlette_finds_them_status_code_first_sync_too() -> None:
    app = app_with_handlers()

    async def gone(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("gone, by status", status_code=410)

    def teapot(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("short and stout", status_code=418)

    app.add_exception_handler(410, gone)
    app.add_exception_handler(Teapot, teapot)
    answers = []
    for error in (HTTPException(410), Teapot()):
        lane, inner = failing_lane(error)
        wire = Wire()
        await lane(http_scope(app=app), wire.receive, wire.send)
        assert not inner.calls
        answers.append((wire.sent[0]["status"], wire.body))

    assert answers == [(410, b"gone, by status"), (418, b"short and stout")]
