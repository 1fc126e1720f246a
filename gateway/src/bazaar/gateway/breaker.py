"""A circuit breaker per upstream: fail fast while an upstream is down, probe it now and then.

It opens on a failure *rate* over a sliding window with a minimum number of calls (a burst
with hundreds of requests in flight makes a few errors without the upstream being down),
and lets one trial through after a short pause that grows while trials keep failing, so
recovery follows the upstream within about `max_reset_seconds` without hammering it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from enum import Enum

from bazaar.shared.metrics import BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN

#: Calls not admitted as the half-open trial carry this id.
ORDINARY = 0
#: A pause is shortened by up to this share at random, so replicas do not probe in step.
JITTER = 0.2


class State(Enum):
    """Breaker states; the values are `bazaar_circuit_breaker_state`'s, as in every process."""

    CLOSED = BREAKER_CLOSED
    HALF_OPEN = BREAKER_HALF_OPEN
    OPEN = BREAKER_OPEN


class BreakerOpen(Exception):
    """The upstream's breaker is open: do not call it now."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"circuit open; retry after {retry_after} s")
        self.retry_after = retry_after


class CircuitBreaker:
    """Opens when at least `min_calls` calls in the last `window_seconds` failed at
    `failure_rate` or more; then lets one trial through after `reset_seconds`, doubling the
    pause after each failed trial up to `max_reset_seconds`; closes when a trial succeeds.

    Every admitted call gets an id from `before_call`; its outcome is reported with that id
    (`on_success`/`on_failure`), and `end` is called when the call is over whatever
    happened, so a trial that ended saying nothing about the upstream frees its place.
    """

    def __init__(
        self,
        *,
        window_seconds: int = 10,
        min_calls: int = 20,
        failure_rate: float = 0.5,
        reset_seconds: float = 0.5,
        max_reset_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._min_calls = min_calls
        self._rate = failure_rate
        self._first_reset = reset_seconds
        self._max_reset = max(max_reset_seconds, reset_seconds)
        self._clock = clock
        self._jitter = jitter
        # One bucket per second of the window, at index second % window: [calls, failures],
        # with running totals over the window, so a verdict costs O(1), not O(window).
        self._buckets = [[0, 0] for _ in range(window_seconds)]
        self._second = -1  # the latest second a bucket was started for
        self._calls = self._failures = 0
        self._opened_at: float | None = None
        self._pause = reset_seconds  # the pause before the next trial
        self._next_pause = reset_seconds  # the unjittered pause after the next failed trial
        self._trial = ORDINARY  # the id of the trial in flight, if any
        self._trials = 0
        #: Times it opened (from closed, or again after a failed trial).
        self.opened = 0

    @property
    def state(self) -> State:
        """The current state."""
        if self._opened_at is None:
            return State.CLOSED
        if self._clock() - self._opened_at >= self._pause:
            return State.HALF_OPEN
        return State.OPEN

    def before_call(self) -> int:
        """The call's id; raise BreakerOpen unless it may go ahead (half-open: one trial)."""
        opened_at = self._opened_at
        if opened_at is None:
            return ORDINARY
        remaining = self._pause - (self._clock() - opened_at)
        if remaining <= 0 and self._trial == ORDINARY:
            self._trials += 1
            self._trial = self._trials
            return self._trial
        raise BreakerOpen(max(1, math.ceil(remaining)))

    def on_success(self, call: int) -> None:
        """The upstream answered: count it; a successful trial closes the breaker."""
        if self._opened_at is None:
            self._bucket()[0] += 1
            self._calls += 1
        elif call != ORDINARY and call == self._trial:
            self._close()
        # Other outcomes while open come from calls admitted before it opened: stale.

    def on_failure(self, call: int) -> None:
        """The upstream failed: count it; open at the threshold, or again after a failed trial."""
        if self._opened_at is None:
            bucket = self._bucket()
            bucket[0] += 1
            bucket[1] += 1
            self._calls += 1
            self._failures += 1
            if self._tripped():
                self._open(self._first_reset)
        elif call != ORDINARY and call == self._trial:
            self._open(self._next_pause)

    def end(self, call: int) -> None:
        """The call is over: a trial that reported nothing lets the next call try instead."""
        if call != ORDINARY and call == self._trial:
            self._trial = ORDINARY

    def _bucket(self) -> list[int]:
        """This second's bucket; the seconds that left the window leave the totals."""
        second = int(self._clock())
        size = len(self._buckets)
        if second > self._second:
            # Each bucket is recycled at most once per second that passes: amortised O(1).
            for passing in range(max(self._second + 1, second - size + 1), second + 1):
                bucket = self._buckets[passing % size]
                self._calls -= bucket[0]
                self._failures -= bucket[1]
                bucket[0] = bucket[1] = 0
            self._second = second
        return self._buckets[second % size]

    def _tripped(self) -> bool:
        calls = self._calls
        return calls >= self._min_calls and self._failures >= self._rate * calls

    def _open(self, pause: float) -> None:
        self.opened += 1
        self._opened_at = self._clock()
        self._pause = pause * (1 - JITTER * self._jitter())
        self._next_pause = min(pause * 2, self._max_reset)
        self._trial = ORDINARY

    def _close(self) -> None:
        self._opened_at, self._trial = None, ORDINARY
        self._pause = self._next_pause = self._first_reset
        for bucket in self._buckets:  # the failures that opened it are history now
            bucket[0] = bucket[1] = 0
        self._calls = self._failures = 0
