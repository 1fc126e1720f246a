"""The reconciler's pace: a backlog per round, several orders at once, none at a dead catalog."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bazaar.orders.domain.model import Order, OrderStatus, RequestedLine, unpriced_lines
from bazaar.orders.service.ports import CatalogState
from bazaar.orders.service.reconcile import ReconcilePolicy, reconcile_once

MUG = uuid.uuid4()
POLICY = ReconcilePolicy(
    batch_size=10,
    concurrency=4,
    lease_seconds=0.5,
    max_backoff_seconds=4.0,
    work_seconds=2.0,
    pending_max_age=timedelta(minutes=1),
)


def _backlog(transactions: Any, count: int) -> list[Order]:
    """`count` pending orders, oldest first, one mug each."""
    start = datetime.now(UTC) - timedelta(seconds=30)
    orders = []
    for i in range(count):
        created = start + timedelta(milliseconds=i)
        order = Order(
            id=uuid.uuid4(),
            customer_id="alice",
            status=OrderStatus.PENDING,
            lines=unpriced_lines([RequestedLine(MUG, 1)]),
            created_at=created,
            updated_at=created,
        )
        transactions.orders.rows[order.id] = order
        orders.append(order)
    return orders


def _statuses(transactions: Any, orders: list[Order]) -> set[OrderStatus]:
    return {transactions.orders.rows[o.id].status for o in orders}


async def _reconcile(transactions: Any, catalog: Any, policy: ReconcilePolicy = POLICY) -> int:
    return await reconcile_once(transactions=transactions, catalog=catalog, policy=policy)


async def test_a_backlog_many_batches_long_is_settled_in_one_round(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 100}
    backlog = _backlog(transactions, 35)

    seen = await _reconcile(transactions, fake_catalog)

    assert seen == 35
    assert _statuses(transactions, backlog) == {OrderStatus.CONFIRMED}
    assert fake_catalog.stock == {MUG: 65}
    assert all(claim["limit"] <= POLICY.batch_size for claim in transactions.orders.claims)


async def test_orders_are_settled_several_at_once_never_more_than_the_concurrency(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 100}
    fake_catalog.seconds = 0.02  # each reservation takes a while: calls overlap
    backlog = _backlog(transactions, 30)

    await _reconcile(transactions, fake_catalog)

    assert fake_catalog.most_in_flight == POLICY.concurrency
    assert _statuses(transactions, backlog) == {OrderStatus.CONFIRMED}


async def test_orders_are_asked_for_oldest_first(transactions: Any, fake_catalog: Any) -> None:
    fake_catalog.stock = {MUG: 100}
    backlog = _backlog(transactions, 12)
    one_at_a_time = ReconcilePolicy(batch_size=5, concurrency=1, work_seconds=2.0)

    await _reconcile(transactions, fake_catalog, one_at_a_time)

    assert [order_id for order_id, _ in fake_catalog.reserve_calls] == [o.id for o in backlog]


async def test_nothing_is_leased_or_asked_while_catalogs_breaker_is_open(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 100}
    fake_catalog.breaker = CatalogState.DOWN
    backlog = _backlog(transactions, 5)

    seen = await _reconcile(transactions, fake_catalog)

    assert seen == 0
    assert transactions.orders.claims == []
    assert fake_catalog.reserve_calls == []
    assert _statuses(transactions, backlog) == {OrderStatus.PENDING}


async def test_one_order_alone_tries_catalog_once_the_breaker_allows_then_the_rest_follow(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 100}
    fake_catalog.seconds = 0.01
    fake_catalog.breaker = CatalogState.TRIAL
    backlog = _backlog(transactions, 20)
    reserve = fake_catalog.reserve
    in_flight_during_trial: list[int] = []

    async def trial_closes_the_breaker(order_id: uuid.UUID, lines: Any) -> Any:
        if fake_catalog.breaker is CatalogState.TRIAL:
            outcome = await reserve(order_id, lines)
            in_flight_during_trial.append(fake_catalog.most_in_flight)
            fake_catalog.breaker = CatalogState.UP
            return outcome
        return await reserve(order_id, lines)

    fake_catalog.reserve = trial_closes_the_breaker

    await _reconcile(transactions, fake_catalog)

    assert in_flight_during_trial == [1]
    assert fake_catalog.reserve_calls[0][0] == backlog[0].id
    assert _statuses(transactions, backlog) == {OrderStatus.CONFIRMED}
    assert fake_catalog.most_in_flight == POLICY.concurrency


async def test_a_failed_trial_leaves_every_other_order_alone(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.breaker = CatalogState.TRIAL
    fake_catalog.down = True
    backlog = _backlog(transactions, 6)
    reserve = fake_catalog.reserve

    async def trial_opens_the_breaker_again(order_id: uuid.UUID, lines: Any) -> Any:
        outcome = await reserve(order_id, lines)
        fake_catalog.breaker = CatalogState.DOWN
        return outcome

    fake_catalog.reserve = trial_opens_the_breaker_again

    seen = await _reconcile(transactions, fake_catalog)

    assert seen == 1
    assert [order_id for order_id, _ in fake_catalog.reserve_calls] == [backlog[0].id]
    assert _statuses(transactions, backlog) == {OrderStatus.PENDING}


async def test_work_that_would_outlive_its_lease_is_given_up(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 100}
    fake_catalog.seconds = 5.0  # far beyond the lease: another replica may take it up
    [order] = _backlog(transactions, 1)
    short = ReconcilePolicy(concurrency=2, work_seconds=0.05)

    async with asyncio.timeout(2):
        await _reconcile(transactions, fake_catalog, short)

    assert transactions.orders.rows[order.id] == order
    assert transactions.orders.claims[0]["min_lease"] == 0.05
