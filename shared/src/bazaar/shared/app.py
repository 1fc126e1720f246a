"""The app factory piece every service builds on: errors, context, metrics, tracing, resources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import httpx
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from bazaar.shared.auth import TokenVerifier
from bazaar.shared.db import Database, PoolSettings, PoolStats
from bazaar.shared.errors import ErrorMap, install_problem_handlers
from bazaar.shared.fastlane import FastLane, FastRoute
from bazaar.shared.health import QUIET_PATHS, ops_router
from bazaar.shared.idempotency import IdempotencyStore
from bazaar.shared.messaging import Messaging, Subscription, messaging_settings
from bazaar.shared.metrics import DatabasePoolCollector, HttpMetrics
from bazaar.shared.middleware import RequestsInFlight, ServiceMiddleware
from bazaar.shared.openapi import install_openapi, operation_id
from bazaar.shared.schemas import refuse_nul_characters
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.tasks import periodically
from bazaar.shared.telemetry import server_telemetry, setup_tracing
from bazaar.shared.version import service_version

#: How often expired idempotency keys are deleted (lookups already ignore them).
PURGE_INTERVAL_SECONDS = 3600.0

ServiceLifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
#: Verified bearer tokens each service remembers (until expiry, at most a minute).
VERIFIED_TOKEN_CACHE_SIZE = 10_000


def database_for(settings: ServiceSettings) -> Database:
    """The service's database pool, sized and bounded from its settings."""
    return Database(
        PoolSettings(
            dsn=settings.dsn(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            acquire_timeout=settings.db_acquire_timeout,
            command_timeout=settings.db_command_timeout,
        )
    )


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    error_map: ErrorMap,
    lifespan: ServiceLifespan | None = None,
    jwks_client: Callable[[FastAPI], httpx.AsyncClient] | None = None,
    subscriptions: Sequence[Subscription] = (),
    fast_routes: Sequence[FastRoute] = (),
) -> FastAPI:
    """Build an app with the shared behaviour; `lifespan` adds the service's own resources.

    `jwks_client` lets a service fetch the JWKS another way than over the network (auth
    reads its own keys through its own app, in-process). `subscriptions` are the service's
    event consumers; with `amqp_url` set, the lifespan runs them and the outbox relay.
    `fast_routes` are hot reads whose plain success skips FastAPI's routing and dependency
    solving (see `bazaar.shared.fastlane`); each stands in for a route of `routers`.
    """
    _check_fast_routes(fast_routes, routers)
    version = service_version(settings.service_name)
    provider = setup_tracing(settings.service_name, version, settings.otel_exporter_otlp_endpoint)

    @asynccontextmanager
    async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = database_for(settings)
        http = jwks_client(app) if jwks_client is not None else None
        verifier = TokenVerifier(
            settings.verifier_settings(), client=http, cache_size=VERIFIED_TOKEN_CACHE_SIZE
        )
        store = IdempotencyStore(db)
        app.state.db = db
        app.state.token_verifier = verifier
        app.state.idempotency = store
        app.state.readiness_checks["database"] = db.ping
        try:
            await db.open()
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(
                    periodically(
                        PURGE_INTERVAL_SECONDS, store.purge_expired, name="purge idempotency keys"
                    )
                )
                if lifespan is not None:
                    await stack.enter_async_context(lifespan(app))
                # Innermost: consumers drain before the service's own resources close.
                messaging = _messaging(app, settings, db, subscriptions)
                if messaging is not None:
                    await stack.enter_async_context(messaging.running())
                yield
        finally:
            await store.drain()
            await verifier.aclose()
            if http is not None:
                await http.aclose()
            await db.close()

    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
        # A redirect would carry this service's internal host name to the client.
        redirect_slashes=False,
        # Before any route's own parameters: no NUL reaches SQL from a path, query or header.
        # The fast lane (`fast_routes`) declines what this would look into (`may_hold_nul`):
        # an app-level dependency added here must be added there too.
        dependencies=[Depends(refuse_nul_characters)],
        # A server span per request only when spans are recorded; else the ids alone.
        telemetry=server_telemetry(provider),
    )
    app.state.settings = settings
    app.state.subscriptions = tuple(subscriptions)
    app.state.messaging = None
    app.state.metrics = HttpMetrics(settings.service_name)
    # The pool exists while the lifespan runs; its gauges are read from it when scraped.
    app.state.metrics.registry.register(DatabasePoolCollector(lambda: _pool_stats(app)))
    app.state.readiness_checks = {}
    #: The tasks serving requests now: a shutdown cancels those left when its grace ends.
    app.state.requests_in_flight = RequestsInFlight()
    install_problem_handlers(app, error_map)
    install_openapi(app)
    app.include_router(ops_router())
    for router in routers:
        app.include_router(router)
    if fast_routes:
        # Added first, so inside ServiceMiddleware (the last added is the outermost): the
        # lane's answers get the ids, trace, body limit, backstop, metrics and access log.
        app.add_middleware(FastLane, routes=fast_routes)
    # One layer: ids, trace, body limit, backstop, metrics, access log (see middleware).
    app.add_middleware(
        ServiceMiddleware,
        metrics=app.state.metrics,
        max_bytes=settings.max_body_bytes,
        quiet_paths=QUIET_PATHS,
        start_traces=not provider.recording,
        in_flight=app.state.requests_in_flight,
    )
    return app


def _check_fast_routes(fast_routes: Sequence[FastRoute], routers: Sequence[APIRouter]) -> None:
    """Refuse a fast route standing in for no route of the app (it could answer alone), or
    for a route with dependencies its handler does not solve (`FastRoute.solves`)."""
    for fast in fast_routes:
        if not any(fast.route is route for router in routers for route in router.routes):
            raise ValueError(f"fast route {fast.route.path}: its APIRoute is not in `routers`")
        if fast.method not in (fast.route.methods or ()):
            raise ValueError(f"fast route {fast.route.path}: its route takes no {fast.method}")
        unsolved = [
            getattr(call, "__qualname__", repr(call))
            for call in _dependency_calls(fast.route)
            if call not in fast.solves
        ]
        if unsolved:
            # The route's, its router's or its parameters': the lane would answer without.
            raise ValueError(
                f"fast route {fast.route.path}: its route has dependencies the lane does not "
                f"solve: {', '.join(unsolved)}"
            )


def _dependency_calls(route: APIRoute) -> list[Callable[..., object]]:
    """Every dependency a route solves (its own, its router's, nested), not the app's."""
    calls: list[Callable[..., object]] = []
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if dependant.call is not None:
            calls.append(dependant.call)
        pending.extend(dependant.dependencies)
    return calls


def _pool_stats(app: FastAPI) -> PoolStats | None:
    """The pool's numbers while the lifespan holds one (None before it starts)."""
    db: Database | None = getattr(app.state, "db", None)
    return None if db is None else db.stats()


def _messaging(
    app: FastAPI, settings: ServiceSettings, db: Database, subscriptions: Sequence[Subscription]
) -> Messaging | None:
    """The service's relay and consumers when a broker is configured (else None)."""
    configured = messaging_settings(settings)
    if configured is None:
        return None
    messaging = Messaging(
        configured,
        service=settings.service_name,
        db=db,
        registry=app.state.metrics.registry,
        subscriptions=subscriptions,
    )
    app.state.messaging = messaging
    app.state.readiness_checks["broker"] = messaging.ready
    return messaging
