"""Dependencies of the order routes: who may call, and with what."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bazaar.orders.adapters.metrics import OrderMetrics
from bazaar.orders.adapters.uow import SqlTransactions
from bazaar.orders.service.ports import Catalog
from bazaar.shared.auth import Principal, require_any_scope, require_scopes

ADMIN_SCOPE = "orders:admin"

Reader = Annotated[Principal, Depends(require_scopes("orders:read"))]
Writer = Annotated[Principal, Depends(require_scopes("orders:write"))]


def viewer_of(caller: Principal) -> str | None:
    """Whose orders the caller sees: its own, or everyone's (None) with orders:admin."""
    return None if caller.has_scopes(ADMIN_SCOPE) else caller.subject


async def catalog(request: Request) -> Catalog:
    """The catalog client of this process."""
    client: Catalog = request.app.state.catalog
    return client


async def order_metrics(request: Request) -> OrderMetrics:
    """The orders metrics of this process."""
    metrics: OrderMetrics = request.app.state.order_metrics
    return metrics


async def transactions(request: Request) -> SqlTransactions:
    """Transactions for use cases that need more than one."""
    txs: SqlTransactions = request.app.state.transactions
    return txs


#: Cancel: its own orders with orders:write, any order with orders:admin.
CANCEL_SCOPES = ("orders:write", ADMIN_SCOPE)
Canceller = Annotated[Principal, Depends(require_any_scope(*CANCEL_SCOPES))]
CatalogDep = Annotated[Catalog, Depends(catalog)]
TransactionsDep = Annotated[SqlTransactions, Depends(transactions)]
Meter = Annotated[OrderMetrics, Depends(order_metrics)]
