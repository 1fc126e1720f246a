"""The catalog breaker: a hanging call trips it, a cancellation survives it, metrics show it."""

from __future__ import annotations

import asyncio

import pybreaker
import pytest
from prometheus_client import CollectorRegistry

from bazaar.orders.adapters.breaker import BreakerBoard, make_breaker


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


async def test_the_breaker_state_goes_0_2_1_0_and_its_openings_are_counted() -> None:
    registry = CollectorRegistry()
    breaker = make_breaker("catalog", fail_max=1, reset_timeout=0.05, board=BreakerBoard(registry))

    def scraped() -> tuple[float | None, float | None]:
        labels = {"dependency": "catalog"}
        return (
            registry.get_sample_value("bazaar_circuit_breaker_state", labels),
            registry.get_sample_value("bazaar_circuit_breaker_opened_total", labels),
        )

    seen = [scraped()]
    _trip(breaker)
    seen.append(scraped())
    await asyncio.sleep(0.06)
    seen.append(scraped())  # its trial is due: half-open, as the gateway's breakers say
    with breaker.calling():  # the trial succeeds
        seen.append(scraped())
    seen.append(scraped())
    _trip(breaker)
    seen.append(scraped())

    # The encoding of every breaker: 0 closed, 1 half-open, 2 open.
    assert seen == [(0, 0), (2, 1), (1, 1), (1, 1), (0, 1), (2, 2)]


async def test_a_failed_trial_counts_as_opening_again() -> None:
    registry = CollectorRegistry()
    breaker = make_breaker("catalog", fail_max=1, reset_timeout=60, board=BreakerBoard(registry))

    _trip(breaker)
    _fail_trial(breaker)

    labels = {"dependency": "catalog"}
    assert registry.get_sample_value("bazaar_circuit_breaker_state", labels) == 2
    assert registry.get_sample_value("bazaar_circuit_breaker_opened_total", labels) == 2


async def test_breakers_of_several_dependencies_are_scraped_from_one_registry() -> None:
    registry = CollectorRegistry()
    board = BreakerBoard(registry)
    catalog = make_breaker("catalog", fail_max=1, reset_timeout=60, board=board)
    make_breaker("auth", fail_max=1, reset_timeout=60, board=board)

    _trip(catalog)

    def scraped(dependency: str) -> tuple[float | None, float | None]:
        labels = {"dependency": dependency}
        return (
            registry.get_sample_value("bazaar_circuit_breaker_state", labels),
            registry.get_sample_value("bazaar_circuit_breaker_opened_total", labels),
        )

    assert (scraped("catalog"), scraped("auth")) == ((2, 1), (0, 0))


def _trip(breaker: pybreaker.CircuitBreaker) -> None:
    with pytest.raises(ConnectionError), breaker.calling():
        raise ConnectionError("refused")


def _fail_trial(breaker: pybreaker.CircuitBreaker) -> None:
    breaker.half_open()  # its reset time has passed: the next call is a trial
    _trip(breaker)


def test_each_failed_trial_doubles_the_pause_up_to_the_max_and_a_success_starts_over() -> None:
    breaker = make_breaker("catalog", fail_max=1, reset_timeout=0.5, max_reset_timeout=2.0)
    pauses: list[float] = []

    _trip(breaker)
    pauses.append(breaker.reset_timeout)
    for _ in range(4):
        _fail_trial(breaker)
        pauses.append(breaker.reset_timeout)
    breaker.half_open()
    with breaker.calling():
        pass
    assert breaker.current_state == "closed"
    _trip(breaker)

    # Each pause is drawn at 0.5-1x of 0.5, 1, 2, 2, 2 s; after a success 0.5 s again.
    for pause, nominal in zip(pauses, [0.5, 1.0, 2.0, 2.0, 2.0], strict=True):
        assert nominal / 2 <= pause <= nominal, pauses
    assert 0.25 <= breaker.reset_timeout <= 0.5


def test_replicas_draw_their_pauses_apart() -> None:
    pauses = set()
    for _ in range(20):
        breaker = make_breaker("catalog", fail_max=1, reset_timeout=1.0, max_reset_timeout=8.0)
        _trip(breaker)
        pauses.add(breaker.reset_timeout)
    assert len(pauses) > 10
