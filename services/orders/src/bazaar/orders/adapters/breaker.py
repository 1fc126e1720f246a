"""A pybreaker circuit breaker per dependency, its state logged and exported as metrics."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
from prometheus_client import CollectorRegistry

from bazaar.shared.metrics import (
    BREAKER_CLOSED,
    BREAKER_HALF_OPEN,
    BREAKER_OPEN,
    BreakerCollector,
    BreakerReading,
)

log = logging.getLogger("bazaar.orders.breaker")


class _Backoff(pybreaker.CircuitBreakerListener):
    """Set the breaker's next reset time: short at first, doubled per failed trial, jittered.

    A fixed reset time is either slow to notice a dependency that is back or hard on one
    that is still down; this one follows a brief fault within about `first` and asks a long
    outage once per `longest` at most. Replicas draw their pauses apart (0.5-1x), so they
    do not send their trials in lockstep.
    """

    def __init__(self, first: float, longest: float) -> None:
        self._first = first
        self._longest = max(first, longest)
        self._nominal = first

    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        old_name = getattr(old, "name", str(old))
        new_name = getattr(new, "name", str(new))
        if new_name == "closed":
            self._nominal = self._first
        elif new_name == "open" and old_name != "open":
            # Opened by a failed trial: wait longer. Opened from closed: a new fault. (A call
            # begun before it opened and failing since re-opens it: no trial, no doubling.)
            if old_name == "half-open":
                self._nominal = min(self._nominal * 2, self._longest)
            else:
                self._nominal = self._first
            cb.reset_timeout = self._nominal * random.uniform(0.5, 1.0)


class _StateListener(pybreaker.CircuitBreakerListener):
    """Log each change of state; count the openings."""

    def __init__(self) -> None:
        self.opened = 0

    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        old_name = getattr(old, "name", str(old))
        new_name = getattr(new, "name", str(new))
        if new_name == old_name:  # a failure while already open re-enters the same state
            return
        if new_name == "open":
            self.opened += 1
        level = logging.WARNING if new_name == "open" else logging.INFO
        log.log(
            level,
            "circuit %s: %s -> %s",
            cb.name,
            old_name,
            new_name,
            extra={"dependency": cb.name, "state": new_name},
        )


def state_value(breaker: pybreaker.CircuitBreaker) -> int:
    """The breaker's `bazaar_circuit_breaker_state`: half-open once a trial is due, as the
    gateway's breakers report it (pybreaker itself moves only when the trial starts)."""
    state = breaker.current_state
    if state == "closed":
        return BREAKER_CLOSED
    if state == "half-open" or is_trial_due(breaker):
        return BREAKER_HALF_OPEN
    return BREAKER_OPEN


class BreakerBoard:
    """The breakers of one process, read by one collector in its registry when scraped
    (`bazaar_circuit_breaker_{state,opened_total}`), as the gateway reads its own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._readers: dict[str, Callable[[], tuple[int, int]]] = {}
        registry.register(BreakerCollector(self.readings))

    def watch(self, name: str, read: Callable[[], tuple[int, int]]) -> None:
        """Show the breaker `name` (its state and times opened, from `read`) when scraped;
        a breaker made again under the same name replaces the one before."""
        self._readers[name] = read

    def readings(self) -> list[BreakerReading]:
        """Each breaker's dependency, state and times it opened, now."""
        return [(name, *read()) for name, read in self._readers.items()]


def make_breaker(
    name: str,
    *,
    fail_max: int,
    reset_timeout: float,
    max_reset_timeout: float | None = None,
    board: BreakerBoard | None = None,
) -> pybreaker.CircuitBreaker:
    """A breaker for `name`: opens after `fail_max` failures in a row, then sends trials.

    The first trial comes `reset_timeout` after it opens, each failed trial doubles the
    pause up to `max_reset_timeout` (the same as `reset_timeout` when not given), and a
    success starts again from `reset_timeout`; every pause is drawn at 0.5-1x its value.

    A cancellation inside the guarded block counts as a failure (pybreaker has no neutral
    outcome: an excluded one counts as a success and resets the count), so a caller lets one
    reach it only for its own deadline, which a hanging dependency must trip; a cancellation
    from outside (shutdown) must not (the catalog client shields its attempt from it). The
    failure that trips the breaker is raised as it was, never swapped for a
    CircuitBreakerError, so a cancellation stays a cancellation.
    """
    backoff = _Backoff(reset_timeout, max_reset_timeout or reset_timeout)
    states = _StateListener()
    breaker = pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_timeout,
        throw_new_error_on_trip=False,
        listeners=[backoff, states],
        name=name,
    )
    if board is not None:
        board.watch(name, lambda: (state_value(breaker), states.opened))
    return breaker


def is_trial_due(breaker: pybreaker.CircuitBreaker) -> bool:
    """Tell whether an open breaker has waited its reset time: its next call is a trial."""
    # pybreaker keeps the moment it opened only in its state storage (no public accessor).
    opened_at: datetime | None = breaker._state_storage.opened_at
    waited = timedelta(seconds=breaker.reset_timeout)
    return opened_at is None or datetime.now(UTC) >= opened_at + waited
