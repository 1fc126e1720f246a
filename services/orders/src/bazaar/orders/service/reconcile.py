"""The reconciler: settles pending orders and gives back reservations that landed too late."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from bazaar.orders.domain.model import Order, RejectReason
from bazaar.orders.service.orders import reject_order, requested_lines, settle_order
from bazaar.orders.service.ports import Catalog, Reserved, Transactions, Unavailable

log = logging.getLogger("bazaar.orders.reconcile")


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    """How the reconciler paces itself."""

    batch_size: int = 50
    #: First pause before a leased order is looked at again; doubles per attempt.
    lease_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    #: A pending order older than this is rejected (its reservation, if any, given back).
    pending_max_age: timedelta = timedelta(minutes=15)


async def reconcile_once(
    *, transactions: Transactions, catalog: Catalog, policy: ReconcilePolicy
) -> int:
    """Look at every order due now (leased to this replica); return how many were seen."""
    async with transactions.begin() as uow:
        due = await uow.orders.claim_due(
            limit=policy.batch_size,
            lease_seconds=policy.lease_seconds,
            max_backoff=policy.max_backoff_seconds,
        )
    for order in due:
        try:
            if order.is_pending:
                await _settle_pending(order, transactions, catalog, policy)
            elif order.release_pending:
                await _release_late_reservation(order, transactions, catalog)
        except Exception:  # one bad order must not stop the others; its lease retries it
            log.exception("could not reconcile order %s", order.id)
    return len(due)


async def _settle_pending(
    order: Order, transactions: Transactions, catalog: Catalog, policy: ReconcilePolicy
) -> None:
    if datetime.now(UTC) - order.created_at > policy.pending_max_age:
        async with transactions.begin() as uow:
            current = await uow.orders.get(order.id, for_update=True)
            if current is not None and current.is_pending:
                await reject_order(current, RejectReason.EXPIRED, uow=uow)
                log.warning("rejected order %s: pending too long", order.id)
        return
    outcome = await catalog.reserve(order.id, requested_lines(order))
    if isinstance(outcome, Unavailable):
        log.info("order %s still pending: %s", order.id, outcome.reason)
        return
    async with transactions.begin() as uow:
        settled = await settle_order(order.id, outcome, uow=uow, known=order)
    log.info("order %s settled as %s", order.id, settled.status.value)


async def _release_late_reservation(
    order: Order, transactions: Transactions, catalog: Catalog
) -> None:
    reservation_id: UUID | None = order.reservation_id
    if reservation_id is None:
        # Asking again with the order's key replays a reservation that landed; if none did,
        # catalog reserves now (or refuses) and we give it straight back.
        outcome = await catalog.reserve(order.id, requested_lines(order))
        if isinstance(outcome, Unavailable):
            return
        if isinstance(outcome, Reserved):
            reservation_id = outcome.reservation.id
    if reservation_id is not None and not await catalog.release(reservation_id):
        return
    async with transactions.begin() as uow:
        current = await uow.orders.get(order.id, for_update=True)
        if current is not None and current.release_pending:
            await uow.orders.update(current.late_reservation_released(reservation_id))
