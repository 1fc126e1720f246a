"""Order routes: parse, call one use case, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from bazaar.orders.adapters.uow import SqlUnitOfWork
from bazaar.orders.api.deps import (
    CANCEL_SCOPES,
    Canceller,
    CatalogDep,
    Meter,
    Reader,
    TransactionsDep,
    Writer,
    viewer_of,
)
from bazaar.orders.api.openapi import either_scope
from bazaar.orders.api.schemas import OrderCreate, OrderRead
from bazaar.orders.domain.errors import InsufficientStock, OrderExpired, OrderRefused
from bazaar.orders.domain.model import Order, OrderStatus, RejectReason, RequestedLine
from bazaar.orders.service import orders as use
from bazaar.orders.service.ports import Invalid, OrderFilter, OutOfStock, ReserveOutcome
from bazaar.shared.deps import Db, Idempotency
from bazaar.shared.idempotency import RequiredIdempotencyKey, StoredResponse, problem_response_for
from bazaar.shared.idempotency.respond import respond_once
from bazaar.shared.openapi import problem_responses
from bazaar.shared.pagination import Page, Pagination

router = APIRouter(prefix="/v1/orders", tags=["orders"])

_PENDING: dict[int | str, dict[str, Any]] = {
    202: {
        "model": OrderRead,
        "description": "Catalog is unreachable: the order is pending and settles by itself.",
    }
}


def _location(order: Order) -> str:
    return f"/v1/orders/{order.id}"


def _placed_answer(request: Request, order: Order, outcome: ReserveOutcome) -> StoredResponse:
    """The answer to POST /v1/orders for the order as it now stands."""
    if order.status is OrderStatus.REJECTED:
        error: Exception
        if order.reject_reason == RejectReason.INVALID_LINES.value:
            detail = outcome.detail if isinstance(outcome, Invalid) else "Invalid order lines."
            error = OrderRefused(detail, order_id=order.id)
        elif order.reject_reason == RejectReason.EXPIRED.value:
            error = OrderExpired(
                "The order was rejected: catalog could not be reached in time.",
                order_id=order.id,
            )
        else:
            short = outcome.product_ids if isinstance(outcome, OutOfStock) else ()
            error = InsufficientStock(short, order_id=order.id)
        problem = problem_response_for(request)(error)
        assert problem is not None
        headers = {**problem.headers, "Location": _location(order)}
        return StoredResponse(problem.status, problem.body, headers)
    status = 202 if order.is_pending else 201
    body = OrderRead.of(order).model_dump(mode="json")
    return StoredResponse(status, body, {"Location": _location(order)})


@router.post(
    "",
    status_code=201,
    response_model=OrderRead,
    responses={**_PENDING, **problem_responses(400, 401, 403, 409, 422)},
)
async def place_order(
    request: Request,
    body: OrderCreate,
    caller: Writer,
    db: Db,
    store: Idempotency,
    idempotency_key: RequiredIdempotencyKey,
    catalog: CatalogDep,
    transactions: TransactionsDep,
    meter: Meter,
) -> Response:
    """Place an order: 201 confirmed, 202 pending (catalog unreachable), 409 out of stock."""
    placement = use.OrderPlacement(
        caller.subject,
        [RequestedLine(line.product_id, line.quantity) for line in body.lines],
        idempotency_key=idempotency_key,
        transactions=transactions,
        catalog=catalog,
    )

    settled: list[SqlUnitOfWork] = []

    async def operation(conn: asyncpg.Connection) -> StoredResponse:
        uow = SqlUnitOfWork(conn)
        order = await placement.settle(uow)
        settled.append(uow)
        return _placed_answer(request, order, placement.outcome)

    new = placement.new_order()
    response = await respond_once(
        request,
        prepare=placement.reserve,
        claim_with=None
        if new is None
        else transactions.open_on_claim(
            new, idempotency_key=idempotency_key, opened=placement.opened
        ),
        operation=operation,
        db=db,
        store=store,
        key=idempotency_key,
        principal=caller.subject,
        body=body.model_dump(mode="json"),
    )
    # Here the operation's transaction has committed (a replay ran none). The order entered
    # `pending` before: counted by `transactions` as its row committed. (A cancellation while
    # the store gives its connection back still skips this count: respond_once has no hook
    # right after its commit.)
    for uow in settled:
        meter.count(uow.entered)
    return response


@router.get("", response_model=Page[OrderRead], responses=problem_responses(401, 403, 422))
async def list_orders(
    request: Request,
    caller: Reader,
    db: Db,
    page: Pagination,
    status: OrderStatus | None = None,
    customer_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> JSONResponse:
    """List your orders, newest first (every customer's with orders:admin)."""
    after = page.after()
    viewer = viewer_of(caller)
    if viewer is not None and customer_id not in (None, viewer):
        # A customer sees only their own orders: another customer's list is empty to them.
        return page.answer(request.url, [], OrderRead.of)
    filters = OrderFilter(customer_id=viewer or customer_id, status=status)
    async with db.connection() as conn:
        rows = await use.list_orders(
            filters, limit=page.limit + 1, after=after, uow=SqlUnitOfWork(conn)
        )
    return page.answer(request.url, rows, OrderRead.of)


@router.get("/{order_id}", response_model=OrderRead, responses=problem_responses(401, 403, 404))
async def get_order(order_id: UUID, caller: Reader, db: Db) -> OrderRead:
    """Get one of your orders (another customer's answers 404)."""
    async with db.connection() as conn:
        order = await use.get_order(order_id, viewer=viewer_of(caller), uow=SqlUnitOfWork(conn))
    return OrderRead.of(order)


@router.post(
    "/{order_id}/cancel",
    response_model=OrderRead,
    responses=problem_responses(401, 403, 404, 409),
    openapi_extra=either_scope(CANCEL_SCOPES),
)
async def cancel_order(
    order_id: UUID, caller: Canceller, transactions: TransactionsDep
) -> OrderRead:
    """Cancel a pending or confirmed order; cancelling again answers the order unchanged."""
    async with transactions.begin() as uow:
        order = await use.cancel_order(order_id, viewer=viewer_of(caller), uow=uow)
    return OrderRead.of(order)
