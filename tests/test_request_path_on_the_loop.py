"""No route of any service hands part of its request to a worker thread.

FastAPI runs an endpoint or dependency that is a plain function (or a class) in anyio's
thread pool: a thread hop each way on every request that uses it, which costs more CPU than
most of what such a dependency does, and the event loop waits on the pool's threads. Every
endpoint and dependency of the three services is a coroutine (issue 13: a lean path).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from bazaar.auth.app import create_app as create_auth
from bazaar.auth.config import AuthSettings
from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.config import CatalogSettings
from bazaar.orders.app import create_app as create_orders
from bazaar.orders.config import OrdersSettings


def _apps() -> dict[str, Callable[[], FastAPI]]:
    return {
        "auth": lambda: create_auth(AuthSettings(_env_file=None, environment="test")),  # type: ignore[call-arg]
        "catalog": lambda: create_catalog(
            CatalogSettings(_env_file=None, environment="test")  # type: ignore[call-arg]
        ),
        "orders": lambda: create_orders(OrdersSettings(_env_file=None, environment="test")),  # type: ignore[call-arg]
    }


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, including those of included routers (nested in this FastAPI)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)
        elif isinstance(route, APIRoute):
            yield route


def _runs_on_the_loop(call: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    # An instance (HTTPBearer…) whose class has an async __call__.
    method = inspect.getattr_static(type(call), "__call__", None)
    return not inspect.isclass(call) and (
        inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)
    )


def _thread_hops(app: FastAPI) -> list[str]:
    found = [
        f"every route: {getattr(depends.dependency, '__qualname__', depends.dependency)}"
        for depends in app.router.dependencies
        if depends.dependency is not None and not _runs_on_the_loop(depends.dependency)
    ]
    for route in _api_routes(app.routes):
        pending = [route.dependant]
        while pending:
            dependant = pending.pop()
            call = dependant.call
            if call is not None and not _runs_on_the_loop(call):
                name = getattr(call, "__qualname__", type(call).__qualname__)
                found.append(f"{sorted(route.methods)} {route.path}: {name}")
            pending.extend(dependant.dependencies)
    return found


@pytest.mark.parametrize("service", sorted(_apps()))
def test_every_endpoint_and_dependency_runs_on_the_event_loop(service: str) -> None:
    app = _apps()[service]()
    walked = {(method, route.path) for route in _api_routes(app.routes) for method in route.methods}
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }

    assert documented <= walked, "the walk no longer sees every route the service documents"
    assert _thread_hops(app) == []


def test_the_check_sees_a_plain_function_dependency() -> None:
    from fastapi import Depends

    def plain() -> int:
        return 1

    async def coroutine() -> int:
        return 1

    app = FastAPI()

    @app.get("/plain")
    async def uses_plain(value: int = Depends(plain)) -> int:
        return value

    @app.get("/coroutine")
    async def uses_coroutine(value: int = Depends(coroutine)) -> int:
        return value

    assert [hop.split(": ")[1] for hop in _thread_hops(app)] == [plain.__qualname__]
    app.router.dependencies.append(Depends(plain))
    assert f"every route: {plain.__qualname__}" in _thread_hops(app)
