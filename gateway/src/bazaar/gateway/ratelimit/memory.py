"""In-process fixed-window counters: exact within one process, per replica across several."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bazaar.gateway.ratelimit.key import safe_key
from bazaar.gateway.ratelimit.policy import Decision, Policy, Verdict


@dataclass(slots=True)
class _Window:
    end: int
    count: int


class MemoryRateLimiter:
    """Count requests per (policy, key) in epoch-aligned windows held in this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        # Window ends still to sweep, with the counters that were opened to end then: expired
        # counters are dropped as time passes, in work proportional to what expired.
        self._ends: list[int] = []
        self._ending: dict[int, list[tuple[str, str]]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    async def hit(self, checks: Sequence[tuple[Policy, str]]) -> Verdict:
        """Count one request against every (policy, key) and return the verdict."""
        # No await below: the whole decision is atomic on the event loop.
        now = self._clock()
        self._sweep(now)
        decisions = []
        for policy, key in checks:
            slot = (policy.name, safe_key(key))
            end = policy.window_start(now) + policy.window
            window = self._windows.get(slot)
            if window is None or window.end != end:
                window = self._windows[slot] = _Window(end, 0)
                self._expect(end, slot)
            window.count += 1
            decisions.append(Decision.counted(policy, window.count, math.ceil(end - now)))
        return Verdict(decisions)

    def _expect(self, end: int, slot: tuple[str, str]) -> None:
        ending = self._ending.get(end)
        if ending is None:
            ending = self._ending[end] = []
            heapq.heappush(self._ends, end)
        ending.append(slot)

    def _sweep(self, now: float) -> None:
        while self._ends and self._ends[0] <= now:
            end = heapq.heappop(self._ends)
            for slot in self._ending.pop(end):
                window = self._windows.get(slot)
                if window is not None and window.end <= now:
                    del self._windows[slot]
