"""The reconciler: settles pending orders and gives back reservations that landed too late.

Every replica runs it. A round works through every order due now, oldest first, several at
once (`ReconcilePolicy.concurrency`), and leases an order only when a worker is free to start
on it at once, so a lease covers one order's work and no wait in a queue of ours. While
catalog's breaker is open nothing is leased; once its reset time has passed, one order at a
time tests whether catalog is back, and the others follow as soon as it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from bazaar.orders.domain.model import Order, RejectReason
from bazaar.orders.service.limited import LimitedTransactions
from bazaar.orders.service.orders import reject_order, requested_lines, settle_order
from bazaar.orders.service.ports import (
    Catalog,
    CatalogState,
    PendingBacklog,
    Reserved,
    Transactions,
    Unavailable,
)
from bazaar.shared.errors import is_outage
from bazaar.shared.tasks import OutageLog

log = logging.getLogger("bazaar.orders.reconcile")


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    """How the reconciler paces itself."""

    #: The most orders leased in one statement.
    batch_size: int = 50
    #: Orders worked on at once (each makes one catalog call at a time).
    concurrency: int = 16
    #: Database transactions of the reconciler at once: fewer than the pool holds, so requests
    #: (placements, reads) always find a connection while a backlog drains.
    db_connections: int = 8
    #: First pause before a leased order is looked at again; doubles per attempt.
    lease_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    #: The longest one order's work may take (two catalog calls at most, and the transaction
    #: recording the answer): no lease is shorter, and work still running then is given up,
    #: so no other replica ever takes an order up while a call for it may be in flight.
    work_seconds: float = 9.0
    #: A pending order older than this, which catalog could not answer for although it
    #: answered others, is rejected (its reservation, if any, given back).
    pending_max_age: timedelta = timedelta(minutes=15)


_OUTAGES = OutageLog("reconcile orders")


async def reconcile_once(
    *,
    transactions: Transactions,
    catalog: Catalog,
    policy: ReconcilePolicy,
    outages: OutageLog = _OUTAGES,
    show_backlog: Callable[[PendingBacklog], None] | None = None,
) -> int:
    """Work through every order due now (leased to this replica); return how many were seen.

    `show_backlog` is given the pending orders as the round leaves them.
    """
    round_ = _Round(transactions, catalog, policy)
    try:
        await round_.run()  # a failed claim ends the round once its work is done
        if show_backlog is not None:
            show_backlog(await measure_backlog(transactions=transactions))
    except Exception as exc:
        if not is_outage(exc):
            raise  # a bug: logged with its traceback by whoever runs the rounds
        outages.record(exc, 1 + len(round_.outages))
        return round_.seen
    if round_.outages:
        outages.record(round_.outages[0], len(round_.outages))
    else:
        outages.end()
    return round_.seen


async def measure_backlog(*, transactions: Transactions) -> PendingBacklog:
    """The pending orders now: how many, and the age of the oldest."""
    async with transactions.autocommit() as uow:
        return await uow.orders.pending_backlog()


class _Round:
    """One pass over the due orders, `policy.concurrency` of them in flight at most."""

    def __init__(self, transactions: Transactions, catalog: Catalog, policy: ReconcilePolicy):
        self._transactions: Transactions = LimitedTransactions(transactions, policy.db_connections)
        self._catalog = catalog
        self._policy = policy
        self._running: set[asyncio.Task[None]] = set()
        #: Orders whose work the database cut short (reported once, by `reconcile_once`).
        self.outages: list[Exception] = []
        # Lease in chunks, not one order per freed worker: a claim is a transaction.
        self._refill_at = max(1, min(policy.concurrency, policy.batch_size) // 2)
        self._tried = False
        self.seen = 0

    async def run(self) -> int:
        """Lease and work until nothing is due or catalog's breaker stops us.

        Work once started is never cancelled, neither when a claim fails nor when the round
        itself is cancelled (shutdown): each worker ends by its own deadline, within its
        lease. Cancelling a call to catalog would leave its order leased for nothing and, in
        numbers, read as catalog failing.
        """
        try:
            while await self._step():
                pass
        finally:
            await self._finish_running()
        return self.seen

    async def _finish_running(self) -> None:
        cancelled = False
        while self._running:
            try:
                await asyncio.wait(set(self._running))
            except asyncio.CancelledError:
                cancelled = True  # still wait: the workers end by their deadline
        if cancelled:
            raise asyncio.CancelledError

    async def _step(self) -> bool:
        """Start the next orders; False once this round has nothing more to start."""
        state = self._catalog.state()
        if state is CatalogState.DOWN:
            return False
        if state is CatalogState.TRIAL:
            if self._tried:
                return False  # one trial a round: the next round asks again
            return await self._trial()
        free = self._policy.concurrency - len(self._running)
        if free < self._refill_at:
            await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            return True
        wanted = min(free, self._policy.batch_size)
        claimed, deadline = await self._claim(wanted)
        for order in claimed:
            task = asyncio.create_task(self._work(order, deadline, trial=False))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(claimed) == wanted

    async def _trial(self) -> bool:
        """One order alone tests whether catalog is back (no burst at a recovering catalog)."""
        if self._running:
            await asyncio.wait(self._running)
            return True  # those calls may have closed or opened the breaker: look again
        self._tried = True
        claimed, deadline = await self._claim(1)
        for order in claimed:
            await self._work(order, deadline, trial=True)
        # Go on only if the trial closed the breaker: a trial whose failure never reached it
        # (no service token) leaves it open, and must not become a trial per due order.
        return bool(claimed) and self._catalog.state() is CatalogState.UP

    async def _claim(self, limit: int) -> tuple[list[Order], float]:
        """Lease up to `limit` due orders; also the moment their work must end by."""
        policy = self._policy
        # Taken before BEGIN: the lease runs from the transaction's now(), which is later,
        # so work ending by this deadline ends within its lease.
        deadline = asyncio.get_running_loop().time() + policy.work_seconds
        async with self._transactions.begin() as uow:
            claimed = await uow.orders.claim_due(
                limit=limit,
                lease_seconds=policy.lease_seconds,
                max_backoff=policy.max_backoff_seconds,
                min_lease=policy.work_seconds,
            )
        self.seen += len(claimed)
        return claimed, deadline

    async def _work(self, order: Order, deadline: float, *, trial: bool) -> None:
        budget = asyncio.timeout_at(deadline)
        try:
            async with budget:
                if order.is_pending:
                    await self._settle_pending(order, trial=trial)
                elif order.release_pending:
                    await _release_late_reservation(order, self._transactions, self._catalog)
        except Exception as exc:  # one bad order must not stop the others; its lease retries it
            if isinstance(exc, TimeoutError) and budget.expired():
                # Its lease ends now: another round (or replica) takes it up again.
                log.warning("gave up on order %s for now: its work outlived its lease", order.id)
            elif is_outage(exc):
                self.outages.append(exc)
            else:
                log.exception("could not reconcile order %s", order.id)

    async def _settle_pending(self, order: Order, *, trial: bool) -> None:
        # An order is always asked for once more, however old: one that grew old while
        # catalog was unreachable is served as soon as catalog is back.
        outcome = await self._catalog.reserve(order.id, requested_lines(order))
        if isinstance(outcome, Unavailable):
            if self._is_given_up(order, outcome, trial=trial):
                await _expire(order, self._transactions)
            else:
                log.info("order %s still pending: %s", order.id, outcome.reason)
            return
        async with self._transactions.begin() as uow:
            settled = await settle_order(order.id, outcome, uow=uow, known=order)
        log.info("order %s settled as %s", order.id, settled.status.value)

    def _is_given_up(self, order: Order, outcome: Unavailable, *, trial: bool) -> bool:
        """Tell whether an order catalog just could not answer for waited too long.

        Only on positive evidence that catalog is up and it is this order that fails: the
        call reached catalog (no token or open breaker of ours stopped it) and catalog
        answered other calls while it was in flight. A breaker that merely stayed closed
        proves nothing (a lone order's failures do not open it; a missing token never
        reaches it): an outage is no reason to give up an order, however long it lasts.
        """
        too_old = datetime.now(UTC) - order.created_at > self._policy.pending_max_age
        return too_old and not trial and outcome.reached and outcome.others_answered


async def _expire(order: Order, transactions: Transactions) -> None:
    async with transactions.begin() as uow:
        current = await uow.orders.get(order.id, for_update=True)
        if current is not None and current.is_pending:
            await reject_order(current, RejectReason.EXPIRED, uow=uow)
            log.warning("rejected order %s: pending too long", order.id)


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
