"""A database outage under the reconciler is one WARNING line, no traceback; bugs stay ERROR."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bazaar.orders.domain.model import Order, OrderStatus, RequestedLine, unpriced_lines
from bazaar.orders.service.reconcile import ReconcilePolicy, reconcile_once
from bazaar.shared.dbfailure import DatabaseBusy
from bazaar.shared.tasks import OutageLog, periodically

MUG = uuid.uuid4()
POLICY = ReconcilePolicy(concurrency=4, lease_seconds=0.01, max_backoff_seconds=0.01)


class _Failing:
    """Transactions that fail with `error` once `fail_after` transactions have begun."""

    def __init__(self, inner: Any, error: Exception, fail_after: int = 0) -> None:
        self._inner = inner
        self._error = error
        self._fail_after = fail_after
        self.orders = inner.orders

    def autocommit(self) -> Any:
        return self._inner.autocommit()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Any]:
        if self._inner.begun >= self._fail_after:
            raise self._error
        async with self._inner.begin() as uow:
            yield uow


def _pending(transactions: Any) -> None:
    created = datetime.now(UTC) - timedelta(seconds=5)
    order = Order(
        id=uuid.uuid4(),
        customer_id="alice",
        status=OrderStatus.PENDING,
        lines=unpriced_lines([RequestedLine(MUG, 1)]),
        created_at=created,
        updated_at=created,
    )
    transactions.orders.rows[order.id] = order


async def _run_rounds(transactions: Any, catalog: Any, seconds: float = 0.5) -> None:
    outages = OutageLog("reconcile orders")

    async def reconcile() -> int:
        transactions.orders.end_leases()
        return await reconcile_once(
            transactions=transactions, catalog=catalog, policy=POLICY, outages=outages
        )

    async with periodically(0.02, reconcile, name="reconcile orders"):
        await asyncio.sleep(seconds)


def _outage_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "database unavailable" in r.getMessage()]


@pytest.mark.parametrize(
    "error",
    [DatabaseBusy(), asyncpg.AdminShutdownError("terminating connection")],
    ids=["no-connection", "admin-shutdown"],
)
async def test_a_database_outage_is_one_warning_line_without_traceback_however_many_rounds(
    error: Exception, transactions: Any, fake_catalog: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await _run_rounds(_Failing(transactions, error), fake_catalog)

    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r for r in caplog.records if r.exc_info] == []
    lines = _outage_lines(caplog)
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert type(error).__name__ in lines[0].getMessage()


async def test_orders_whose_settling_the_database_cut_short_are_one_warning_line(
    transactions: Any, fake_catalog: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake_catalog.stock[MUG] = 100
    for _ in range(6):
        _pending(transactions)
    caplog.set_level(logging.INFO)
    # The lease is taken; recording catalog's answer then finds the database gone.
    error = asyncpg.AdminShutdownError("terminating connection due to administrator command")
    await _run_rounds(_Failing(transactions, error, fail_after=1), fake_catalog)

    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r for r in caplog.records if r.exc_info] == []
    lines = _outage_lines(caplog)
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING


async def test_a_failure_that_is_no_outage_is_still_an_error_with_its_traceback(
    transactions: Any, fake_catalog: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await _run_rounds(_Failing(transactions, RuntimeError("a bug")), fake_catalog, seconds=0.1)

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors
    assert all(r.exc_info for r in errors)
    assert _outage_lines(caplog) == []


async def test_an_outage_that_lasts_is_one_line_per_interval_counting_what_it_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    outages = OutageLog("reconcile orders", interval=0.05)
    for _ in range(5):
        outages.record(DatabaseBusy())
    await asyncio.sleep(0.06)
    outages.record(DatabaseBusy(), count=3)
    outages.end()
    outages.record(DatabaseBusy())

    lines = _outage_lines(caplog)
    assert [r.levelno for r in lines] == [logging.WARNING] * 3
    assert "more failures" not in lines[0].getMessage()
    assert "(6 more failures since the last line)" in lines[1].getMessage()
    assert any("database available again" in r.getMessage() for r in caplog.records)
