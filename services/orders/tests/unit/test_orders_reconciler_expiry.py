"""The reconciler and old orders: served if catalog can, given up only if catalog answers others.

An order that grew old while catalog was unreachable is asked for once more as soon as catalog
is back; it is rejected as `pending-too-long` only when catalog, answering other orders, still
cannot answer for it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bazaar.orders.domain.model import (
    Order,
    OrderStatus,
    RejectReason,
    RequestedLine,
    unpriced_lines,
)
from bazaar.orders.service import orders as use
from bazaar.orders.service.ports import CatalogState, Unavailable
from bazaar.orders.service.reconcile import ReconcilePolicy, reconcile_once

MUG = uuid.uuid4()
POLICY = ReconcilePolicy(
    batch_size=7,
    concurrency=4,
    lease_seconds=0.5,
    max_backoff_seconds=4.0,
    work_seconds=2.0,
    pending_max_age=timedelta(minutes=1),
)


def _pending(
    transactions: Any, *, age: timedelta = timedelta(seconds=5), quantity: int = 1
) -> Order:
    created = datetime.now(UTC) - age
    order = Order(
        id=uuid.uuid4(),
        customer_id="alice",
        status=OrderStatus.PENDING,
        lines=unpriced_lines([RequestedLine(MUG, quantity)]),
        created_at=created,
        updated_at=created,
    )
    transactions.orders.rows[order.id] = order
    return order


async def _reconcile(transactions: Any, catalog: Any) -> int:
    transactions.orders.end_leases()  # a round starts once the last round's leases ran out
    return await reconcile_once(transactions=transactions, catalog=catalog, policy=POLICY)


def _now(transactions: Any, order: Order) -> Order:
    stored: Order = transactions.orders.rows[order.id]
    return stored


async def test_an_order_that_grew_old_while_catalog_was_down_is_confirmed_once_it_is_back(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = _pending(transactions, age=timedelta(minutes=2))

    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order).status is OrderStatus.CONFIRMED
    assert fake_catalog.stock == {MUG: 4}
    assert len(transactions.events.of(use.PLACED)) == 1
    assert transactions.events.of(use.REJECTED) == []


async def test_an_old_order_catalog_cannot_answer_while_it_answers_others_is_rejected_as_expired(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = _pending(transactions, age=timedelta(minutes=2))
    fake_catalog.script = {
        order.id: [
            Unavailable("an earlier attempt is still in flight", reached=True, others_answered=True)
        ]
    }

    await _reconcile(transactions, fake_catalog)

    expired = _now(transactions, order)
    assert expired.status is OrderStatus.REJECTED
    assert expired.reject_reason == RejectReason.EXPIRED.value
    assert expired.release_pending  # the attempt in flight may still reserve: give it back
    [event] = transactions.events.of(use.REJECTED)
    assert event["data"] == {"order_id": order.id, "reason": "pending-too-long"}
    assert transactions.events.of(use.PLACED) == []


async def test_an_old_order_whose_attempt_finds_catalog_down_stays_pending(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = _pending(transactions, age=timedelta(minutes=2))
    reserve = fake_catalog.reserve

    async def fail_and_open_the_breaker(order_id: uuid.UUID, lines: Any) -> Any:
        fake_catalog.down = True
        outcome = await reserve(order_id, lines)
        fake_catalog.breaker = CatalogState.DOWN  # this failure was the one too many
        return outcome

    fake_catalog.reserve = fail_and_open_the_breaker

    await _reconcile(transactions, fake_catalog)

    assert _now(transactions, order) == order
    assert transactions.events.added == []


async def test_an_old_order_whose_trial_call_fails_stays_pending(
    transactions: Any, fake_catalog: Any
) -> None:
    order = _pending(transactions, age=timedelta(minutes=2))
    fake_catalog.breaker = CatalogState.TRIAL
    fake_catalog.down = True
    reserve = fake_catalog.reserve

    async def trial_fails(order_id: uuid.UUID, lines: Any) -> Any:
        outcome = await reserve(order_id, lines)
        fake_catalog.breaker = CatalogState.DOWN
        return outcome

    fake_catalog.reserve = trial_fails

    await _reconcile(transactions, fake_catalog)

    assert len(fake_catalog.reserve_calls) == 1
    assert _now(transactions, order) == order
    assert transactions.events.added == []


async def test_an_expired_order_whose_reservation_had_landed_gives_it_back(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = _pending(transactions, age=timedelta(minutes=2), quantity=3)
    landed = await fake_catalog.reserve(order.id, [RequestedLine(MUG, 3)])
    fake_catalog.script = {
        order.id: [
            Unavailable("an earlier attempt is still in flight", reached=True, others_answered=True)
        ]
    }
    await _reconcile(transactions, fake_catalog)  # expires it

    await _reconcile(transactions, fake_catalog)  # gives back what landed

    done = _now(transactions, order)
    assert done.status is OrderStatus.REJECTED
    assert done.reject_reason == RejectReason.EXPIRED.value
    assert not done.release_pending and done.stock_released
    assert done.reservation_id == landed.reservation.id
    assert fake_catalog.release_calls == [landed.reservation.id]
    assert fake_catalog.active == set()
    assert fake_catalog.stock == {MUG: 5}
