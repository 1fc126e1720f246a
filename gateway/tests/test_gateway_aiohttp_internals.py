"""The aiohttp internals `bazaar.gateway.edge` relies on exist with the shape it expects.

aiohttp has no public hook for the edge (see its docstring); the pin `aiohttp>=3.14,<3.15`
keeps these in place, and this test makes an upgrade that moves one fail here, by name,
rather than somewhere in the edge's behaviour.
"""

from __future__ import annotations

import asyncio
import collections
import inspect

import aiohttp
from aiohttp import web, web_protocol, web_response
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import HttpRequestParser
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD


async def _handler(_request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


def test_the_pinned_aiohttp_is_3_14() -> None:
    assert aiohttp.__version__.startswith("3.14."), aiohttp.__version__


async def test_an_app_runner_makes_its_server_in_make_server() -> None:
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    runner = web.AppRunner(web.Application(handler_args={"max_field_size": 12345}))
    await runner.setup()
    try:
        server = runner.server
        assert isinstance(server, web.Server)
        # What EdgeRunner copies into its EdgeServer.
        assert callable(server.request_handler) and callable(server.request_factory)
        assert isinstance(server.handler_cancellation, bool)
        assert isinstance(server._kwargs, dict) and server._kwargs["max_field_size"] == 12345
        assert server._loop is asyncio.get_running_loop()
        params = inspect.signature(web.Server.__init__).parameters
        assert {"request_factory", "handler_cancellation", "loop", "kwargs"} <= params.keys()
    finally:
        await runner.cleanup()


async def test_a_request_handler_has_the_state_the_edge_reads() -> None:
    params = inspect.signature(web.RequestHandler.__init__).parameters
    assert {"max_field_size", "max_line_size", "max_headers", "keepalive_timeout"} <= set(params)
    protocol = web.Server(_handler, max_field_size=4321)()
    assert isinstance(protocol, web.RequestHandler)
    assert protocol.max_field_size == 4321
    assert isinstance(protocol._messages, collections.deque)
    assert protocol._waiter is None and protocol._upgraded is False
    assert list(inspect.signature(protocol.data_received).parameters) == ["data"]
    handle_error = inspect.signature(web.RequestHandler.handle_error).parameters
    assert list(handle_error) == ["self", "request", "status", "exc", "message"]
    # Parser errors reach handle_error through the error handler aiohttp makes for them.
    assert "self.handle_error(" in inspect.getsource(web.RequestHandler._make_error_handler)
    assert "_ErrInfo" in inspect.getsource(web.RequestHandler.data_received)
    error = web_protocol._ErrInfo(status=431, exc=BadHttpMessage("x"), message="")
    assert (error.status, error.message) == (431, "")
    assert EMPTY_PAYLOAD.is_eof()
    writer = StreamWriter(protocol, asyncio.get_running_loop())
    assert writer.output_size == 0


async def test_the_parser_names_the_limit_it_hit_and_too_many_headers() -> None:
    assert LineTooLong(b"x", 8190).args[1] == 8190
    protocol = web.Server(_handler)()
    parser = HttpRequestParser(
        protocol, asyncio.get_running_loop(), 2**16, max_field_size=100, max_headers=2
    )
    head = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    try:
        parser.feed_data(head)
    except BadHttpMessage as exc:
        assert exc.args == ("Too many headers received",)
    else:
        raise AssertionError("more than max_headers headers were accepted")
    parser = HttpRequestParser(
        protocol, asyncio.get_running_loop(), 2**16, max_field_size=100, max_headers=10
    )
    try:
        parser.feed_data(b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"a" * 200 + b"\r\n\r\n")
    except LineTooLong as exc:
        assert exc.args[1] == 100
    else:
        raise AssertionError("a header line over max_field_size was accepted")


def test_the_default_server_header_is_a_module_constant_read_per_answer() -> None:
    assert isinstance(web_response.SERVER_SOFTWARE, str)
    assert "SERVER_SOFTWARE" in inspect.getsource(web_response.StreamResponse)


async def test_the_router_is_frozen_once_the_runner_made_its_server() -> None:
    # What `edge.direct` reads: the router's resources once no route can be added, each
    # resource's routes (method "*" for any), and the app's dispatch as the server's handler.
    app = web.Application()
    app.router.add_get("/plain", _handler)
    app.router.add_get("/dynamic/{name}", _handler)
    catch_all = app.router.add_resource("/{tail:.*}")
    catch_all.add_route("*", _handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert runner.server is not None
        assert runner.server.request_handler == app._handle
        assert app.router.frozen
        try:
            app.router.add_get("/late", _handler)
        except RuntimeError:
            pass
        else:
            raise AssertionError("a route was added to a frozen router")
        resources = list(app.router.resources())
        assert [r.canonical for r in resources] == ["/plain", "/dynamic/{name}", "/{tail}"]
        assert isinstance(resources[0], web.PlainResource)
        assert not isinstance(resources[1], web.PlainResource)
        [route] = list(catch_all)
        assert route.method == "*" and route.handler is _handler
    finally:
        await runner.cleanup()
