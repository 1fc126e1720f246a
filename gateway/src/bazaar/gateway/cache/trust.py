"""When a stored answer may still be served: API.md promises that a change not made
through the gateway is visible within 1 s, which events make possible.

While this replica is subscribed to `catalog.*` events, an entry fetched after the
subscription began is dropped as soon as an event names its product, so it is served for
its whole freshness lifetime. Without a subscription (no broker configured, the connection
lost, not yet re-subscribed) an event may be missed, so only entries at most
`UNTRUSTED_MAX_AGE` old are served: a stale answer lives 1 s, not `s-maxage`. Entries
fetched before the subscription (re)began may have missed an event, and so may entries
fetched before an invalidation that failed (Redis down): they are held to the same 1 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bazaar.gateway.cache.store import Found

#: Seconds an answer may be served without events to tell when it changed (API.md: 1 s).
UNTRUSTED_MAX_AGE = 1.0


class Trust:
    """Since when stored answers are known to have missed no invalidation (None: not now)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None

    @property
    def subscribed(self) -> bool:
        """Whether invalidating events are being received."""
        return self._since is not None

    def subscribed_since(self, moment: float) -> None:
        """Events are received for every change committed after `moment` (clock time)."""
        self._since = moment

    def lost(self) -> None:
        """Events may be missed from now on (the subscription is gone)."""
        self._since = None

    def doubt(self) -> None:
        """An invalidation failed: entries fetched before now may be stale."""
        if self._since is not None:
            self._since = self._clock()

    def allows(self, found: Found) -> bool:
        """Whether a stored answer may be served now."""
        if found.ttl <= 0:
            return False
        if found.age <= UNTRUSTED_MAX_AGE:
            return True
        since = self._since
        return since is not None and self._clock() - found.age >= since
