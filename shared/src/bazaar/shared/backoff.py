"""Pauses between tries of a loop that waits out an outage: exponential, with full jitter."""

from __future__ import annotations

import asyncio

from tenacity import RetryCallState, Retrying, wait_random_exponential


class Backoff:
    """tenacity's `wait_random_exponential` for hand-written loops; `reset()` after a success.

    The jitter matters when several replicas lose the same broker or database: without it
    they all come back in the same instant, every time.
    """

    def __init__(self, first: float, most: float) -> None:
        self._wait = wait_random_exponential(multiplier=first, max=most)
        self._state = RetryCallState(Retrying(), None, (), {})

    def next(self) -> float:
        """The next pause, in seconds (the bound doubles each time, up to `most`)."""
        pause = self._wait(self._state)
        self._state.attempt_number += 1
        return pause

    def reset(self) -> None:
        """Start from the first, short pause again."""
        self._state.attempt_number = 1

    async def sleep(self) -> None:
        """Sleep the next pause."""
        await asyncio.sleep(self.next())
