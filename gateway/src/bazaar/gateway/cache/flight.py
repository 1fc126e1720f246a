"""Single flight: concurrent misses of one key in this replica share one upstream request.

A flight is keyed by the target and the era its lookup saw, so a request never joins a
fetch that began before an invalidation it knows of (another replica's write, seen in
Redis); invalidations made here detach the groups' flights at once, so a request after
a write always starts a fetch of its own.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

from bazaar.gateway.cache.entry import Entry
from bazaar.gateway.cache.key import Target
from bazaar.gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a flight ended: an answer to share (fetched at loop time `started`), the
    gateway's own failure to repeat, or neither (each waiter then asks on its own)."""

    started: float
    entry: Entry | None = None
    failure: GatewayError | None = None
    failure_headers: dict[str, str] = field(default_factory=dict)

    def raise_failure(self) -> None:
        """Raise a copy of the failure, if any (each answer adds its own headers to it)."""
        if self.failure is not None:
            failure = copy.copy(self.failure)
            failure.headers = dict(self.failure_headers)
            raise failure


_Key = tuple[str, str | None]


class Flights:
    """The fetches under way, by target and era."""

    def __init__(self) -> None:
        self._flights: dict[_Key, tuple[str, asyncio.Future[Outcome]]] = {}

    def join(self, target: Target, era: str | None) -> asyncio.Future[Outcome] | None:
        """The fetch under way for the target in this era, if any."""
        flight = self._flights.get((target.key, era))
        return None if flight is None else flight[1]

    def lead(self, target: Target, era: str | None) -> asyncio.Future[Outcome]:
        """Start a flight others may join; `land` must end it."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._flights[(target.key, era)] = (target.group, future)
        return future

    def land(
        self, target: Target, era: str | None, future: asyncio.Future[Outcome], outcome: Outcome
    ) -> None:
        """End the flight with its outcome (once; later calls change nothing)."""
        key = (target.key, era)
        if self._flights.get(key, (None, None))[1] is future:
            del self._flights[key]
        if not future.done():
            future.set_result(outcome)

    def detach(self, groups: Sequence[str] | None) -> None:
        """Let no new request join the groups' flights (None: any flight)."""
        chosen = None if groups is None else frozenset(groups)
        for key, (group, _) in list(self._flights.items()):
            if chosen is None or group in chosen:
                del self._flights[key]
