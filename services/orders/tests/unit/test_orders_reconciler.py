"""The reconciler over in-memory fakes: settles, expires, and gives back stock that came late."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bazaar.orders.domain.model import (
    Order,
    OrderStatus,
    RequestedLine,
    unpriced_lines,
)
from bazaar.orders.service import orders as use
from bazaar.orders.service.ports import OutOfStock, PendingBacklog, Unavailable
from bazaar.orders.service.reconcile import ReconcilePolicy, reconcile_once

MUG = uuid.uuid4()
POLICY = ReconcilePolicy(
    batch_size=7,
    concurrency=8,
    lease_seconds=0.5,
    max_backoff_seconds=4.0,
    work_seconds=2.0,
    pending_max_age=timedelta(minutes=1),
)


def _store(transactions: Any, order: Order) -> Order:
    transactions.orders.rows[order.id] = order
    return order


def _pending(
    transactions: Any, *, age: timedelta = timedelta(seconds=5), quantity: int = 1
) -> Order:
    created = datetime.now(UTC) - age
    return _store(
        transactions,
        Order(
            id=uuid.uuid4(),
            customer_id="alice",
            status=OrderStatus.PENDING,
            lines=unpriced_lines([RequestedLine(MUG, quantity)]),
            created_at=created,
            updated_at=created,
        ),
    )


async def _reconcile(transactions: Any, catalog: Any) -> int:
    transactions.orders.end_leases()  # a round starts once the last round's leases ran out
    return await reconcile_once(transactions=transactions, catalog=catalog, policy=POLICY)


def _now(transactions: Any, order: Order) -> Order:
    stored: Order = transactions.orders.rows[order.id]
    return stored


async def test_a_pending_order_is_confirmed_once_catalog_reserves(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = _pending(transactions, quantity=2)

    seen = await _reconcile(transactions, fake_catalog)

    assert seen == 1
    settled = _now(transactions, order)
    assert settled.status is OrderStatus.CONFIRMED
    assert settled.reservation_id == fake_catalog.reservations[order.id].id
    assert fake_catalog.stock == {MUG: 3}
    [event] = transactions.events.of(use.PLACED)
    assert event["data"]["status"] == "confirmed"
    assert transactions.orders.claims == [
        {"limit": 7, "lease_seconds": 0.5, "max_backoff": 4.0, "min_lease": 2.0}
    ]


async def test_a_pending_order_catalog_cannot_serve_is_rejected(
    transactions: Any, fake_catalog: Any
) -> None:
    order = _pending(transactions)

    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order).status is OrderStatus.REJECTED
    [event] = transactions.events.of(use.REJECTED)
    assert event["data"] == {"order_id": order.id, "reason": "insufficient-stock"}


async def test_a_pending_order_stays_pending_while_catalog_is_down(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    fake_catalog.down = True
    order = _pending(transactions)

    await _reconcile(transactions, fake_catalog)
    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order) == order
    assert transactions.events.added == []
    assert len(fake_catalog.reserve_calls) == 2
    fake_catalog.down = False

    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order).status is OrderStatus.CONFIRMED
    assert fake_catalog.stock == {MUG: 4}


async def test_a_reservation_found_again_is_the_one_that_landed_never_a_second(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = _pending(transactions)
    landed = await fake_catalog.reserve(order.id, [RequestedLine(MUG, 1)])  # answer was lost

    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order).reservation_id == landed.reservation.id
    assert fake_catalog.stock == {MUG: 4}


async def test_a_cancelled_order_with_nothing_landed_ends_holding_nothing(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = _store(transactions, _pending(transactions).cancel())

    await _reconcile(transactions, fake_catalog)

    done = _now(transactions, order)
    assert done.status is OrderStatus.CANCELLED
    assert not done.release_pending
    assert fake_catalog.active == set()
    assert fake_catalog.stock == {MUG: 5}


async def test_a_late_reservation_already_known_is_released_without_asking_again(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    pending = _pending(transactions)
    landed = (await fake_catalog.reserve(pending.id, [RequestedLine(MUG, 1)])).reservation
    order = _store(transactions, pending.cancel().reservation_landed_late(landed))
    calls_before = len(fake_catalog.reserve_calls)

    await _reconcile(transactions, fake_catalog)

    assert len(fake_catalog.reserve_calls) == calls_before
    assert fake_catalog.release_calls == [landed.id]
    assert not _now(transactions, order).release_pending
    assert fake_catalog.stock == {MUG: 5}


async def test_a_release_catalog_cannot_take_now_is_tried_again_later(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    pending = _pending(transactions)
    landed = (await fake_catalog.reserve(pending.id, [RequestedLine(MUG, 1)])).reservation
    order = _store(transactions, pending.cancel().reservation_landed_late(landed))
    fake_catalog.releasing_fails = True

    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order).release_pending
    fake_catalog.releasing_fails = False

    await _reconcile(transactions, fake_catalog)

    assert not _now(transactions, order).release_pending
    assert fake_catalog.release_calls == [landed.id, landed.id]
    assert fake_catalog.active == set()


async def test_a_cancelled_order_stays_watched_while_catalog_is_down(
    transactions: Any, fake_catalog: Any
) -> None:
    order = _store(transactions, _pending(transactions).cancel())
    fake_catalog.down = True

    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order).release_pending
    assert fake_catalog.release_calls == []


async def test_one_order_that_fails_does_not_stop_the_others(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    broken = _pending(transactions)
    fine = _pending(transactions)
    fake_catalog.script = {broken.id: [RuntimeError("catalog sent nonsense")]}

    seen = await _reconcile(transactions, fake_catalog)

    assert seen == 2
    assert _now(transactions, broken).is_pending
    assert _now(transactions, fine).status is OrderStatus.CONFIRMED


async def test_an_order_settled_meanwhile_by_its_own_request_is_left_alone(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = _pending(transactions)
    reserve = fake_catalog.reserve

    async def reserve_while_the_request_settles(order_id: uuid.UUID, lines: Any) -> Any:
        outcome = await reserve(order_id, lines)
        async with transactions.begin() as uow:
            await use.settle_order(order_id, outcome, uow=uow)  # the request got there first
        return outcome

    fake_catalog.reserve = reserve_while_the_request_settles

    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order).status is OrderStatus.CONFIRMED
    assert len(transactions.events.of(use.PLACED)) == 1
    assert fake_catalog.stock == {MUG: 4}


async def test_an_order_catalog_refuses_once_it_is_back_is_rejected(
    transactions: Any, fake_catalog: Any
) -> None:
    order = _pending(transactions)
    fake_catalog.script = {order.id: [Unavailable("hung"), OutOfStock((MUG,))]}

    await _reconcile(transactions, fake_catalog)
    assert _now(transactions, order).is_pending
    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order).reject_reason == "insufficient-stock"
    assert len(transactions.events.of(use.REJECTED)) == 1


async def test_each_round_shows_the_pending_orders_it_leaves(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 1}
    _pending(transactions, age=timedelta(seconds=30))
    _pending(transactions, age=timedelta(seconds=20))
    shown: list[PendingBacklog] = []

    transactions.orders.end_leases()
    await reconcile_once(
        transactions=transactions, catalog=fake_catalog, policy=POLICY, show_backlog=shown.append
    )

    # The older is confirmed (the one unit of stock), the younger refused: none left.
    assert shown == [PendingBacklog(count=0, oldest_seconds=0.0)]
    fake_catalog.down = True
    waiting = _pending(transactions, age=timedelta(seconds=10))
    transactions.orders.end_leases()
    await reconcile_once(
        transactions=transactions, catalog=fake_catalog, policy=POLICY, show_backlog=shown.append
    )
    assert _now(transactions, waiting).is_pending
    assert shown[-1].count == 1
    assert 10 <= shown[-1].oldest_seconds < 15
