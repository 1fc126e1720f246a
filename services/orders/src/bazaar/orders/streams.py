"""The status streams' parts, built and run with the app: one change feed, the stream opener."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bazaar.orders.adapters.snapshots import ORDER_CHANNEL, OrderSnapshots
from bazaar.orders.config import OrdersSettings
from bazaar.orders.service.watch import OrderStreams, StreamPolicy
from bazaar.shared.notify import ChangeFeed
from bazaar.shared.stopping import when_stopping


@asynccontextmanager
async def order_streams(app: FastAPI, settings: OrdersSettings) -> AsyncIterator[None]:
    """LISTEN for order changes while the app runs; end open streams when the server stops."""
    feed = ChangeFeed(settings.listen_dsn(), ORDER_CHANNEL, name="order changes")
    app.state.order_feed = feed
    app.state.order_streams = OrderStreams(
        feed,
        OrderSnapshots(app.state.db),
        StreamPolicy(keepalive_seconds=settings.stream_keepalive_seconds),
    )
    async with feed.running(), when_stopping(app, feed.close):
        yield
