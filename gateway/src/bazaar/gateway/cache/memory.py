"""The in-process store: a bounded LRU of entries (by count and by bytes).

An invalidation deletes the group's entries and remembers the group's epoch, so an answer
fetched before it (its ticket older) is refused when it comes back to be stored. Those
epochs are forgotten after `MAX_FETCH_SECONDS`; a ticket older than that stores nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bazaar.gateway.cache.entry import Entry
from bazaar.gateway.cache.key import Target
from bazaar.gateway.cache.store import Found, Ticket

#: No fetch of a cached read takes longer (route timeouts are seconds): an answer whose
#: ticket is older is not stored, and invalidations older than this are forgotten.
MAX_FETCH_SECONDS = 300.0


@dataclass(slots=True)
class _Kept:
    group: str
    entry: Entry
    expires_at: float
    size: int


class MemoryStore:
    """Entries of this replica only, at most `max_entries` and `max_bytes` in all."""

    def __init__(
        self, *, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Kept] = OrderedDict()  # least recently used first
        self._groups: dict[str, set[str]] = {}
        self.bytes = 0
        self._epoch = 1
        self._all_dropped = 0
        self._dropped: dict[str, tuple[int, float]] = {}  # group -> (epoch, time), oldest first

    def __len__(self) -> int:
        return len(self._entries)

    async def lookup(self, target: Target) -> tuple[Ticket, Found | None]:
        """The fresh entry of the target, if any, and the ticket a later `store` needs."""
        now = self._clock()
        ticket = Ticket("", self._epoch, now)
        kept = self._entries.get(target.key)
        if kept is None:
            return ticket, None
        if kept.expires_at <= now:
            self._forget(target.key)
            return ticket, None
        self._entries.move_to_end(target.key)
        return ticket, Found(kept.entry, kept.entry.lifetime - (kept.expires_at - now))

    async def store(self, target: Target, ticket: Ticket, entry: Entry, age: float) -> bool:
        """Keep the entry unless its group was invalidated since the ticket was taken."""
        now = self._clock()
        dropped = self._dropped.get(target.group)
        if (
            ticket.epoch <= self._all_dropped
            or (dropped is not None and dropped[0] >= ticket.epoch)
            or now - ticket.at > MAX_FETCH_SECONDS
        ):
            return False
        remaining = entry.lifetime - age
        size = entry.size
        if remaining <= 0 or size > self._max_bytes:
            return False
        self._forget(target.key)
        self._entries[target.key] = _Kept(target.group, entry, now + remaining, size)
        self._groups.setdefault(target.group, set()).add(target.key)
        self.bytes += size
        while len(self._entries) > self._max_entries or self.bytes > self._max_bytes:
            self._forget(next(iter(self._entries)))
        return True

    async def drop(self, groups: Sequence[str] | None) -> None:
        """Delete the groups' entries (None: every entry); answers fetched before are refused."""
        now = self._clock()
        epoch = self._epoch
        self._epoch += 1
        if groups is None:
            self._all_dropped = epoch
            for key in list(self._entries):
                self._forget(key)
            self._dropped.clear()
            return
        for group in groups:
            for key in list(self._groups.get(group, ())):
                self._forget(key)
            self._dropped.pop(group, None)  # re-inserted last: the dict stays oldest first
            self._dropped[group] = (epoch, now)
        while self._dropped:
            oldest = next(iter(self._dropped))
            if now - self._dropped[oldest][1] <= MAX_FETCH_SECONDS:
                break
            del self._dropped[oldest]

    async def close(self) -> None:
        """Nothing is held open."""

    def _forget(self, key: str) -> None:
        kept = self._entries.pop(key, None)
        if kept is None:
            return
        self.bytes -= kept.size
        members = self._groups.get(kept.group)
        if members is not None:
            members.discard(key)
            if not members:
                del self._groups[kept.group]
