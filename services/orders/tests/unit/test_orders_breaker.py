"""The catalog breaker: a hanging call trips it, a cancellation survives it, a gauge shows it."""

from __future__ import annotations

import asyncio

import pybreaker
import pytest
from prometheus_client import CollectorRegistry

from bazaar.orders.adapters.breaker import make_breaker


async def _hang_in(breaker: pybreaker.CircuitBreaker) -> None:
    with breaker.calling():
        await asyncio.sleep(60)


async def test_calls_cut_short_by_their_deadline_open_the_breaker() -> None:
    breaker = make_breaker("catalog", fail_max=2, reset_timeout=60)

    for _ in range(2):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await _hang_in(breaker)

    assert breaker.current_state == "open"
    with pytest.raises(pybreaker.CircuitBreakerError), breaker.calling():
        pytest.fail("an open breaker let a call through")


async def test_a_cancelled_call_is_not_a_success_that_forgets_earlier_failures() -> None:
    breaker = make_breaker("catalog", fail_max=2, reset_timeout=60)
    with pytest.raises(ConnectionError), breaker.calling():
        raise ConnectionError("refused")

    task = asyncio.create_task(_hang_in(breaker))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert breaker.current_state == "open"


async def test_the_cancellation_that_trips_the_breaker_stays_a_cancellation() -> None:
    breaker = make_breaker("catalog", fail_max=1, reset_timeout=60)

    task = asyncio.create_task(_hang_in(breaker))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert task.cancelled()
    assert breaker.current_state == "open"


async def test_the_failure_that_trips_the_breaker_is_raised_as_itself() -> None:
    breaker = make_breaker("catalog", fail_max=1, reset_timeout=60)

    with pytest.raises(ConnectionResetError), breaker.calling():
        raise ConnectionResetError("reset by peer")

    assert breaker.current_state == "open"


async def test_the_breaker_state_is_exported_as_a_gauge() -> None:
    registry = CollectorRegistry()
    breaker = make_breaker("catalog", fail_max=1, reset_timeout=0.05, registry=registry)

    def gauge() -> float | None:
        return registry.get_sample_value("bazaar_circuit_breaker_state", {"dependency": "catalog"})

    assert gauge() == 0
    with pytest.raises(ConnectionError), breaker.calling():
        raise ConnectionError("refused")
    assert gauge() == 2
    await asyncio.sleep(0.06)
    with breaker.calling():  # the probe after the reset timeout succeeds
        assert gauge() == 1
    assert gauge() == 0
