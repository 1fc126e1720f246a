"""The orders composition root: the catalog client, its breaker and token, the reconciler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import aiohttp
from fastapi import FastAPI

from bazaar.orders.adapters.breaker import BreakerBoard, make_breaker
from bazaar.orders.adapters.catalog import CallPolicy, CatalogClient
from bazaar.orders.adapters.consumers import SUBSCRIPTIONS
from bazaar.orders.adapters.metrics import OrderMetrics
from bazaar.orders.adapters.tokens import service_tokens
from bazaar.orders.adapters.uow import SqlTransactions
from bazaar.orders.api import events, orders
from bazaar.orders.api.errors import ERROR_MAP
from bazaar.orders.api.openapi import use_declared_security
from bazaar.orders.config import OrdersSettings
from bazaar.orders.service.reconcile import ReconcilePolicy, measure_backlog, reconcile_once
from bazaar.orders.streams import order_streams
from bazaar.shared.app import create_service_app
from bazaar.shared.tasks import periodically

#: The pending gauges are refreshed at least this often, however long a reconciler round.
BACKLOG_SECONDS = 15.0


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    """Build the orders app from its settings (read from the environment when not given)."""
    settings = settings or OrdersSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Catalog and auth each get a pooled session of their own: a burst of reservations
        # must never leave the token refresh waiting for a connection. No cookies between
        # services.
        async with (
            order_streams(app, settings),
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=settings.catalog_pool_size,
                    keepalive_timeout=settings.upstream_pool_idle_seconds,
                    ttl_dns_cache=60,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            ) as session,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=4, keepalive_timeout=settings.upstream_pool_idle_seconds
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            ) as auth_session,
        ):
            tokens = service_tokens(
                auth_session,
                auth_url=settings.auth_url,
                client_id=settings.client_id,
                client_secret=settings.client_secret.get_secret_value(),
            )
            breaker = make_breaker(
                "catalog",
                fail_max=settings.catalog_breaker_fail_max,
                reset_timeout=settings.catalog_breaker_reset_seconds,
                max_reset_timeout=settings.catalog_breaker_max_reset_seconds,
                board=app.state.breakers,
            )
            catalog = CatalogClient(
                session,
                base_url=settings.catalog_url,
                tokens=tokens,
                breaker=breaker,
                policy=CallPolicy(
                    connect_timeout=settings.catalog_connect_timeout_seconds,
                    read_timeout=settings.catalog_read_timeout_seconds,
                    deadline=settings.catalog_deadline_seconds,
                    attempts=settings.catalog_attempts,
                ),
            )
            metrics: OrderMetrics = app.state.order_metrics
            transactions = SqlTransactions(
                app.state.db,
                # The request itself is still trying until its deadline: look later than that.
                reconcile_after=settings.catalog_deadline_seconds + 1.0,
                metrics=metrics,
            )
            app.state.catalog = catalog
            app.state.transactions = transactions
            policy = ReconcilePolicy(
                batch_size=settings.reconcile_batch_size,
                concurrency=settings.reconcile_concurrency,
                db_connections=settings.reconcile_db_connections,
                lease_seconds=settings.reconcile_backoff_seconds,
                max_backoff_seconds=settings.reconcile_max_backoff_seconds,
                # A lease outlives the catalog calls it covers (their deadline), always.
                work_seconds=settings.reconcile_work_seconds,
                pending_max_age=timedelta(seconds=settings.pending_max_age_seconds),
            )

            async def reconcile() -> int:
                return await reconcile_once(
                    transactions=transactions,
                    catalog=catalog,
                    policy=policy,
                    show_backlog=metrics.show,
                )

            async def measure_pending() -> int:
                # Besides each round: a round draining a backlog from a slow catalog is long.
                backlog = await measure_backlog(transactions=transactions)
                metrics.show(backlog)
                return backlog.count

            async with (
                periodically(
                    settings.reconcile_interval_seconds, reconcile, name="reconcile orders"
                ),
                periodically(
                    BACKLOG_SECONDS,
                    measure_pending,
                    name="measure pending orders",
                    # Routine: a line every 15 s per replica would bury the log.
                    done_level=logging.DEBUG,
                ),
            ):
                yield

    app = create_service_app(
        settings,
        title="Bazaar Orders",
        description="Orders and their lifecycle; stock is reserved in catalog.",
        routers=[orders.router, events.router],
        error_map=ERROR_MAP,
        lifespan=lifespan,
        subscriptions=SUBSCRIPTIONS,
    )
    app.state.order_metrics = OrderMetrics(app.state.metrics.registry)
    app.state.breakers = BreakerBoard(app.state.metrics.registry)
    use_declared_security(app)
    return app
