"""The orders composition root: the catalog client, its breaker and token, the reconciler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import aiohttp
from fastapi import FastAPI

from bazaar.orders.adapters.breaker import make_breaker
from bazaar.orders.adapters.catalog import CallPolicy, CatalogClient
from bazaar.orders.adapters.consumers import SUBSCRIPTIONS
from bazaar.orders.adapters.tokens import ServiceTokens
from bazaar.orders.adapters.uow import SqlTransactions
from bazaar.orders.api import orders
from bazaar.orders.api.errors import ERROR_MAP
from bazaar.orders.config import OrdersSettings
from bazaar.orders.service.reconcile import ReconcilePolicy, reconcile_once
from bazaar.shared.app import create_service_app
from bazaar.shared.tasks import periodically


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    """Build the orders app from its settings (read from the environment when not given)."""
    settings = settings or OrdersSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Catalog and auth each get a pooled session of their own: a burst of reservations
        # must never leave the token refresh waiting for a connection. No cookies between
        # services.
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=settings.catalog_pool_size, keepalive_timeout=30, ttl_dns_cache=60
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            ) as session,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4, keepalive_timeout=30),
                cookie_jar=aiohttp.DummyCookieJar(),
            ) as auth_session,
        ):
            tokens = ServiceTokens(
                auth_session,
                token_url=settings.auth_url.rstrip("/") + "/v1/auth/token",
                client_id=settings.client_id,
                client_secret=settings.client_secret.get_secret_value(),
                scope="catalog:reserve",
            )
            breaker = make_breaker(
                "catalog",
                fail_max=settings.catalog_breaker_fail_max,
                reset_timeout=settings.catalog_breaker_reset_seconds,
                registry=app.state.metrics.registry,
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
            transactions = SqlTransactions(
                app.state.db,
                # The request itself is still trying until its deadline: look later than that.
                reconcile_after=settings.catalog_deadline_seconds + 1.0,
            )
            app.state.catalog = catalog
            app.state.transactions = transactions
            policy = ReconcilePolicy(
                batch_size=settings.reconcile_batch_size,
                lease_seconds=settings.reconcile_backoff_seconds,
                max_backoff_seconds=settings.reconcile_max_backoff_seconds,
                pending_max_age=timedelta(seconds=settings.pending_max_age_seconds),
            )

            async def reconcile() -> int:
                return await reconcile_once(
                    transactions=transactions, catalog=catalog, policy=policy
                )

            async with periodically(
                settings.reconcile_interval_seconds, reconcile, name="reconcile orders"
            ):
                yield

    return create_service_app(
        settings,
        title="Bazaar Orders",
        description="Orders and their lifecycle; stock is reserved in catalog.",
        routers=[orders.router],
        error_map=ERROR_MAP,
        lifespan=lifespan,
        subscriptions=SUBSCRIPTIONS,
    )
