"""A circuit breaker per upstream: fail fast while an upstream is down, probe it now and then."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import Enum


class State(Enum):
    """Breaker states (the metric's values)."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class BreakerOpen(Exception):
    """The upstream's breaker is open: do not call it now."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"circuit open; retry after {retry_after} s")
        self.retry_after = retry_after


class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `reset_seconds` lets one trial through."""

    def __init__(
        self, *, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._reset = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> State:
        """The current state."""
        if self._opened_at is None:
            return State.CLOSED
        if self._clock() - self._opened_at >= self._reset:
            return State.HALF_OPEN
        return State.OPEN

    def before_call(self) -> None:
        """Raise BreakerOpen unless a call may go ahead (half-open: only one trial at a time)."""
        state = self.state
        if state is State.CLOSED:
            return
        if state is State.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return
        assert self._opened_at is not None
        remaining = self._reset - (self._clock() - self._opened_at)
        raise BreakerOpen(max(1, math.ceil(remaining)))

    def on_success(self) -> None:
        """The call worked: close the breaker."""
        self._failures, self._opened_at, self._trial_running = 0, None, False

    def on_failure(self) -> None:
        """The call failed: count it; open (again) at the threshold or after a failed trial."""
        self._failures += 1
        if self._trial_running or self._failures >= self._threshold:
            self._opened_at = self._clock()
        self._trial_running = False
