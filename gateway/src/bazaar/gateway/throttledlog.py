"""A warning logged at a bounded rate, however often its cause repeats."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable


class ThrottledWarning:
    """Log the first occurrence at once, then at most one line per `interval` seconds,
    saying how many occurrences it stands for and over how long: a flood of causes is not a
    flood of lines. Occurrences held back are logged when the interval ends (a timer on the
    running loop) or at `flush()`, so a burst's tail is reported, not left for the next one.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next_at = float("-inf")
        self._held = 0
        self._first_held = 0.0
        self._latest_held = 0.0
        self._latest: tuple[str, tuple[object, ...]] = ("", ())
        self._timer: asyncio.TimerHandle | None = None

    def warn(self, message: str, *args: object) -> None:
        """Count one occurrence; log it now unless a line was logged in the last interval."""
        now = self._clock()
        if self._held == 0:
            self._first_held = now
        self._held += 1
        self._latest_held = now
        self._latest = (message, args)
        if now >= self._next_at:
            self._emit(now)
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: the next occurrence or flush() logs them
                return
            self._timer = loop.call_later(self._next_at - now, self.flush)

    def flush(self) -> None:
        """Log the occurrences held back, if any (at the interval's end, or at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held:
            self._emit(self._clock())

    def _emit(self, now: float) -> None:
        message, args = self._latest
        span = self._latest_held - self._first_held
        self._logger.warning(message + " (%d time(s) in %.1f s)", *args, self._held, span)
        self._held = 0
        self._next_at = now + self._interval
