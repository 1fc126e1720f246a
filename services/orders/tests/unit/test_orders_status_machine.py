"""The order status machine: pending → confirmed | rejected; pending | confirmed → cancelled."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from bazaar.orders.api.errors import ERROR_MAP
from bazaar.orders.domain.errors import DuplicateLine, InvalidTransition, OrderNotCancellable
from bazaar.orders.domain.model import (
    Order,
    OrderLine,
    OrderStatus,
    PricedReservation,
    RejectReason,
    RequestedLine,
    check_requested,
    unpriced_lines,
)

MUG, TEA = uuid.uuid4(), uuid.uuid4()
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _pending() -> Order:
    return Order(
        id=uuid.uuid4(),
        customer_id="alice",
        status=OrderStatus.PENDING,
        lines=unpriced_lines([RequestedLine(TEA, 3), RequestedLine(MUG, 1)]),
        created_at=NOW,
        updated_at=NOW,
    )


def _reservation() -> PricedReservation:
    # Catalog lists the lines in its own order.
    return PricedReservation(
        id=uuid.uuid4(),
        lines=(OrderLine(MUG, 1, "MUG-1", "Mug", 1250), OrderLine(TEA, 3, "TEA-1", "Tea", 399)),
        total_cents=1250 + 3 * 399,
        currency="EUR",
    )


def _confirmed() -> Order:
    return _pending().confirm(_reservation())


def _rejected() -> Order:
    return _pending().reject(RejectReason.INSUFFICIENT_STOCK)


def test_a_new_order_is_pending_with_unpriced_lines() -> None:
    order = _pending()

    assert order.is_pending
    assert [(li.product_id, li.quantity) for li in order.lines] == [(TEA, 3), (MUG, 1)]
    assert all(li.sku is None and li.unit_price_cents is None for li in order.lines)
    assert order.total_cents is None and order.currency is None
    assert not order.stock_released and not order.release_pending


def test_confirming_takes_catalogs_prices_in_the_order_the_customer_asked() -> None:
    pending, reservation = _pending(), _reservation()

    order = pending.confirm(reservation)

    assert order.status is OrderStatus.CONFIRMED
    assert not order.is_pending
    assert [li.product_id for li in order.lines] == [TEA, MUG]
    assert order.lines[0] == OrderLine(TEA, 3, "TEA-1", "Tea", 399)
    assert order.total_cents == 2447
    assert order.currency == "EUR"
    assert order.reservation_id == reservation.id
    assert not order.stock_released and not order.release_pending
    assert pending.is_pending, "transitions return a new order"


def test_rejecting_for_stock_releases_nothing_because_nothing_was_reserved() -> None:
    order = _pending().reject(RejectReason.INSUFFICIENT_STOCK)

    assert order.status is OrderStatus.REJECTED
    assert order.reject_reason == "insufficient-stock"
    assert order.stock_released
    assert not order.release_pending


def test_rejecting_invalid_lines_keeps_the_reason() -> None:
    order = _pending().reject(RejectReason.INVALID_LINES)

    assert order.status is OrderStatus.REJECTED
    assert order.reject_reason == "invalid-lines"
    assert not order.release_pending


def test_an_order_expired_while_pending_must_still_check_for_a_late_reservation() -> None:
    order = _pending().reject(RejectReason.EXPIRED)

    assert order.status is OrderStatus.REJECTED
    assert order.reject_reason == "pending-too-long"
    assert order.release_pending


def test_cancelling_a_confirmed_order_waits_for_catalog_to_release_its_stock() -> None:
    confirmed = _confirmed()

    order = confirmed.cancel()

    assert order.status is OrderStatus.CANCELLED
    assert order.reservation_id == confirmed.reservation_id
    assert order.total_cents == confirmed.total_cents
    assert not order.stock_released
    # Catalog releases it on the cancelled event; the reconciler has nothing to do.
    assert not order.release_pending


def test_cancelling_a_pending_order_releases_at_once_and_watches_for_a_late_reservation() -> None:
    order = _pending().cancel()

    assert order.status is OrderStatus.CANCELLED
    assert order.stock_released
    assert order.release_pending
    assert order.reservation_id is None


@pytest.mark.parametrize("make", [_pending, _confirmed], ids=["pending", "confirmed"])
def test_cancelling_a_cancelled_order_changes_nothing(make: object) -> None:
    cancelled = make().cancel()  # type: ignore[operator]

    assert cancelled.cancel() is cancelled


def test_a_rejected_order_cannot_be_cancelled_and_that_is_a_409_conflict() -> None:
    with pytest.raises(OrderNotCancellable):
        _rejected().cancel()
    spec = ERROR_MAP[OrderNotCancellable]
    assert (spec.status, spec.slug) == (409, "conflict")


def test_a_reservation_landing_after_a_cancel_is_remembered_for_release() -> None:
    cancelled, reservation = _pending().cancel(), _reservation()

    order = cancelled.reservation_landed_late(reservation)

    assert order.status is OrderStatus.CANCELLED
    assert order.reservation_id == reservation.id
    assert order.release_pending
    assert not order.stock_released


def test_a_late_reservation_released_leaves_nothing_held() -> None:
    reservation = _reservation()
    waiting = _pending().cancel().reservation_landed_late(reservation)

    order = waiting.late_reservation_released(None)

    assert order.status is OrderStatus.CANCELLED
    assert order.reservation_id == reservation.id
    assert order.stock_released
    assert not order.release_pending


def test_releasing_a_reservation_found_by_asking_again_records_it() -> None:
    found = uuid.uuid4()

    order = _pending().reject(RejectReason.EXPIRED).late_reservation_released(found)

    assert order.reservation_id == found
    assert order.stock_released and not order.release_pending


def test_an_order_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _pending().status = OrderStatus.CONFIRMED  # type: ignore[misc]


def test_one_product_in_two_lines_is_refused() -> None:
    with pytest.raises(DuplicateLine):
        check_requested([RequestedLine(MUG, 1), RequestedLine(TEA, 1), RequestedLine(MUG, 2)])
    check_requested([RequestedLine(MUG, 1), RequestedLine(TEA, 1)])


def test_the_statuses_are_the_four_of_the_contract() -> None:
    assert {s.value for s in OrderStatus} == {"pending", "confirmed", "rejected", "cancelled"}


@pytest.mark.parametrize("settled", [_confirmed, _rejected, lambda: _confirmed().cancel()])
def test_only_a_pending_order_can_be_confirmed_or_rejected(settled: object) -> None:
    order = settled()  # type: ignore[operator]
    with pytest.raises(InvalidTransition):
        order.confirm(_reservation())
    with pytest.raises(InvalidTransition):
        order.reject(RejectReason.INSUFFICIENT_STOCK)
