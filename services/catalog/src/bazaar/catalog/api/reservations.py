"""Internal reservation routes, called by orders with a service token."""

from __future__ import annotations

from uuid import UUID

import asyncpg
from fastapi import APIRouter, Request, Response

from bazaar.catalog.adapters.uow import SqlUnitOfWork
from bazaar.catalog.api.deps import Reserver
from bazaar.catalog.api.schemas import ReservationCreate, ReservationRead
from bazaar.catalog.domain.model import RequestedLine
from bazaar.catalog.service import reservations as use
from bazaar.shared.deps import Db, Idempotency
from bazaar.shared.idempotency import RequiredIdempotencyKey, StoredResponse
from bazaar.shared.idempotency.respond import respond_once
from bazaar.shared.openapi import problem_responses

router = APIRouter(prefix="/v1/reservations", tags=["reservations (internal)"])


@router.post(
    "",
    status_code=201,
    response_model=ReservationRead,
    responses=problem_responses(400, 401, 403, 409, 422),
)
async def reserve_stock(
    request: Request,
    body: ReservationCreate,
    caller: Reserver,
    db: Db,
    store: Idempotency,
    idempotency_key: RequiredIdempotencyKey,
) -> Response:
    """Reserve stock for every line of an order, or for none (409 insufficient-stock)."""
    lines = [RequestedLine(line.product_id, line.quantity) for line in body.lines]

    async def operation(conn: asyncpg.Connection) -> StoredResponse:
        reservation = await use.reserve_stock(body.order_id, lines, uow=SqlUnitOfWork(conn))
        headers = {"Location": f"/v1/reservations/{reservation.id}"}
        return StoredResponse(201, ReservationRead.of(reservation).model_dump(mode="json"), headers)

    return await respond_once(
        request,
        operation=operation,
        db=db,
        store=store,
        key=idempotency_key,
        principal=caller.subject,
        body=body.model_dump(mode="json"),
    )


@router.get(
    "/{reservation_id}",
    response_model=ReservationRead,
    responses=problem_responses(401, 403, 404),
)
async def get_reservation(reservation_id: UUID, _caller: Reserver, db: Db) -> ReservationRead:
    """Get one reservation and its status."""
    async with db.connection() as conn:
        reservation = await use.get_reservation(reservation_id, uow=SqlUnitOfWork(conn))
    return ReservationRead.of(reservation)


@router.delete(
    "/{reservation_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404),
)
async def release_reservation(reservation_id: UUID, _caller: Reserver, db: Db) -> Response:
    """Release a reservation's stock; releasing again answers 204 too."""
    async with db.transaction() as conn:
        await use.release_reservation(reservation_id, uow=SqlUnitOfWork(conn))
    return Response(status_code=204)
