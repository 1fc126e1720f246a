"""Order use cases over in-memory fakes of the ports: place, settle, read, cancel."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bazaar.orders.domain.errors import (
    DuplicateLine,
    KeyUsedForAnotherOrder,
    OrderNotCancellable,
    OrderNotFound,
)
from bazaar.orders.domain.model import OrderStatus, RejectReason, RequestedLine
from bazaar.orders.service import orders as use
from bazaar.orders.service.ports import Invalid, OrderFilter, Reserved, Unavailable

MUG, TEA = uuid.uuid4(), uuid.uuid4()


async def _place(
    transactions: Any, catalog: Any, lines: list[RequestedLine], *, key: str | None = "k-1"
) -> Any:
    placement = use.OrderPlacement(
        "alice", lines, idempotency_key=key, transactions=transactions, catalog=catalog
    )
    await placement.reserve()
    async with transactions.begin() as uow:
        return await placement.settle(uow)


async def test_placing_commits_a_pending_order_before_catalog_is_asked(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    seen_before_asking: list[Any] = []
    reserve = fake_catalog.reserve

    async def reserve_and_look(order_id: uuid.UUID, lines: Any) -> Any:
        seen_before_asking.append(transactions.orders.rows.get(order_id))
        return await reserve(order_id, lines)

    fake_catalog.reserve = reserve_and_look
    placement = use.OrderPlacement(
        "alice",
        [RequestedLine(MUG, 2)],
        idempotency_key="k-1",
        transactions=transactions,
        catalog=fake_catalog,
    )

    await placement.reserve()

    [stored] = seen_before_asking
    assert stored is not None and stored.is_pending
    assert isinstance(placement.outcome, Reserved)
    assert transactions.events.added == []  # settling comes later, in the answer's transaction


async def test_an_order_catalog_reserves_is_confirmed_with_its_placed_event(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5, TEA: 5}

    order = await _place(transactions, fake_catalog, [RequestedLine(TEA, 2), RequestedLine(MUG, 1)])

    assert order.status is OrderStatus.CONFIRMED
    assert [li.product_id for li in order.lines] == [TEA, MUG]
    assert order.total_cents == 300
    assert fake_catalog.stock == {MUG: 4, TEA: 3}
    [(asked_for, lines)] = fake_catalog.reserve_calls
    assert asked_for == order.id
    assert lines == [RequestedLine(TEA, 2), RequestedLine(MUG, 1)]
    [event] = transactions.events.of(use.PLACED)
    assert event["subject"] == str(order.id)
    assert event["data"] == use.order_data(order)
    assert event["data"]["status"] == "confirmed"


async def test_an_order_catalog_cannot_serve_is_rejected_with_its_event(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 1}

    order = await _place(transactions, fake_catalog, [RequestedLine(MUG, 2)])

    assert order.status is OrderStatus.REJECTED
    assert order.reject_reason == "insufficient-stock"
    assert transactions.events.of(use.REJECTED) == [
        {
            "type": use.REJECTED,
            "subject": str(order.id),
            "data": {"order_id": order.id, "reason": "insufficient-stock"},
        }
    ]
    assert transactions.events.of(use.PLACED) == []


async def test_lines_catalog_refuses_reject_the_order_as_invalid(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5, TEA: 5}
    fake_catalog.invalid = "All lines of a reservation must share one currency."

    order = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1), RequestedLine(TEA, 1)])

    assert order.status is OrderStatus.REJECTED
    assert order.reject_reason == RejectReason.INVALID_LINES.value
    [event] = transactions.events.of(use.REJECTED)
    assert event["data"] == {"order_id": order.id, "reason": "invalid-lines"}
    assert fake_catalog.stock == {MUG: 5, TEA: 5}


async def test_catalog_unreachable_leaves_the_order_pending_without_events(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    fake_catalog.down = True

    order = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)])

    assert order.is_pending
    assert transactions.orders.rows[order.id].is_pending
    assert transactions.events.added == []


async def test_one_product_twice_is_refused_before_anything_is_stored_or_asked(
    transactions: Any, fake_catalog: Any
) -> None:
    with pytest.raises(DuplicateLine):
        await _place(transactions, fake_catalog, [RequestedLine(MUG, 1), RequestedLine(MUG, 1)])

    assert transactions.orders.rows == {}
    assert fake_catalog.reserve_calls == []


async def test_a_retried_placement_with_the_same_key_finds_its_order_and_asks_with_its_id(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    first = use.OrderPlacement(
        "alice",
        [RequestedLine(MUG, 1)],
        idempotency_key="k",
        transactions=transactions,
        catalog=fake_catalog,
    )
    await first.reserve()  # the worker died here, before settling

    order = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)], key="k")

    assert order.id == first.order.id  # type: ignore[union-attr]
    assert len(transactions.orders.rows) == 1
    assert [asked for asked, _ in fake_catalog.reserve_calls] == [order.id, order.id]
    assert fake_catalog.stock == {MUG: 4}, "catalog replays the reservation of the order"


async def test_a_retried_placement_of_a_settled_order_does_not_ask_catalog_again(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)], key="k")

    again = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)], key="k")

    assert again == order
    assert len(fake_catalog.reserve_calls) == 1
    assert len(transactions.events.of(use.PLACED)) == 1


async def test_settling_an_order_that_is_no_longer_pending_changes_nothing(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    confirmed = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)])
    other = (await fake_catalog.reserve(uuid.uuid4(), [RequestedLine(MUG, 1)])).reservation

    async with transactions.begin() as uow:
        again = await use.settle_order(confirmed.id, Reserved(other), uow=uow)
        rejected = await use.settle_order(confirmed.id, Invalid("no"), uow=uow)

    assert again == rejected == confirmed
    assert len(transactions.events.added) == 1


async def test_a_reservation_landing_for_a_cancelled_order_is_kept_for_release(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    placement = use.OrderPlacement(
        "alice",
        [RequestedLine(MUG, 1)],
        idempotency_key="k",
        transactions=transactions,
        catalog=fake_catalog,
    )
    await placement.reserve()
    assert placement.order is not None
    async with transactions.begin() as uow:
        await use.cancel_order(placement.order.id, viewer="alice", uow=uow)

    async with transactions.begin() as uow:
        order = await placement.settle(uow)

    assert order.status is OrderStatus.CANCELLED
    assert isinstance(placement.outcome, Reserved)
    assert order.reservation_id == placement.outcome.reservation.id
    assert order.release_pending and not order.stock_released
    assert transactions.events.of(use.PLACED) == []


async def test_settling_an_unknown_order_is_not_found(transactions: Any) -> None:
    async with transactions.begin() as uow:
        with pytest.raises(OrderNotFound):
            await use.settle_order(uuid.uuid4(), Unavailable("down"), uow=uow)


async def test_cancelling_a_confirmed_order_emits_its_reservation_once(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)])

    async with transactions.begin() as uow:
        cancelled = await use.cancel_order(order.id, viewer="alice", uow=uow)
    async with transactions.begin() as uow:
        again = await use.cancel_order(order.id, viewer="alice", uow=uow)

    assert cancelled.status is OrderStatus.CANCELLED
    assert again == cancelled
    [event] = transactions.events.of(use.CANCELLED)
    assert event["data"] == {
        "order_id": order.id,
        "customer_id": "alice",
        "reservation_id": order.reservation_id,
    }


async def test_cancelling_a_rejected_order_is_refused_and_emits_nothing(
    transactions: Any, fake_catalog: Any
) -> None:
    order = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)])
    assert order.status is OrderStatus.REJECTED

    async with transactions.begin() as uow:
        with pytest.raises(OrderNotCancellable):
            await use.cancel_order(order.id, viewer="alice", uow=uow)

    assert transactions.events.of(use.CANCELLED) == []
    assert transactions.orders.rows[order.id].status is OrderStatus.REJECTED


async def test_another_customers_order_cannot_be_seen_or_cancelled_but_an_admin_may(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    order = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)])

    async with transactions.begin() as uow:
        with pytest.raises(OrderNotFound):
            await use.get_order(order.id, viewer="bob", uow=uow)
        with pytest.raises(OrderNotFound):
            await use.cancel_order(order.id, viewer="bob", uow=uow)
        assert (await use.get_order(order.id, viewer=None, uow=uow)) == order
        assert (await use.get_order(order.id, viewer="alice", uow=uow)) == order
        cancelled = await use.cancel_order(order.id, viewer=None, uow=uow)

    assert cancelled.status is OrderStatus.CANCELLED
    assert len(transactions.events.of(use.CANCELLED)) == 1


async def test_listing_passes_the_filters_and_keyset_to_the_store(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 5}
    first = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)], key="a")
    second = await _place(transactions, fake_catalog, [RequestedLine(MUG, 1)], key="b")

    async with transactions.begin() as uow:
        page = await use.list_orders(OrderFilter("alice"), limit=1, after=None, uow=uow)
        rest = await use.list_orders(
            OrderFilter("alice"), limit=5, after=(page[0].created_at, page[0].id), uow=uow
        )
        none = await use.list_orders(OrderFilter("bob"), limit=5, after=None, uow=uow)

    assert [o.id for o in page + rest] == sorted(
        [first.id, second.id],
        key=lambda i: (transactions.orders.rows[i].created_at, i),
        reverse=True,
    )
    assert none == []


async def test_a_key_given_back_after_a_failure_cannot_open_an_order_with_other_lines(
    transactions: Any,
) -> None:
    # The first request stored its order, then failed and released its idempotency claim;
    # a retry with the same key but other lines is a mismatch, never the first order.
    lines_a = [RequestedLine(uuid.uuid4(), 1)]
    lines_b = [RequestedLine(uuid.uuid4(), 2)]
    async with transactions.autocommit() as uow:
        first = await use.open_order("alice", lines_a, idempotency_key="k-1", uow=uow)
    async with transactions.autocommit() as uow:
        with pytest.raises(KeyUsedForAnotherOrder):
            await use.open_order("alice", lines_b, idempotency_key="k-1", uow=uow)
        again = await use.open_order("alice", lines_a, idempotency_key="k-1", uow=uow)
    assert again.id == first.id
