"""What the response cache needs of a store (in-process or Redis)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bazaar.gateway.cache.entry import Entry
from bazaar.gateway.cache.key import Target


class StoreUnavailable(Exception):
    """The store failed or is being skipped after a failure: answer without the cache."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a lookup saw of its group's invalidations: an answer fetched after it may be
    stored only if no invalidation of the group came in between (else it may predate the
    change). `era` is comparable across replicas (Redis) or empty (in-process)."""

    era: str
    epoch: int = 0
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Found:
    """A stored entry and its age (seconds since it was fetched)."""

    entry: Entry
    age: float

    @property
    def ttl(self) -> float:
        """Seconds it stays fresh."""
        return self.entry.lifetime - self.age


class Store(Protocol):
    """Entries by target, invalidated by group."""

    async def lookup(self, target: Target) -> tuple[Ticket, Found | None]:
        """The fresh entry of the target, if any, and the ticket a later `store` needs."""
        ...

    async def store(self, target: Target, ticket: Ticket, entry: Entry, age: float) -> bool:
        """Keep the entry (already `age` seconds old) unless its group was invalidated
        since `ticket` was taken; whether it was kept."""
        ...

    async def drop(self, groups: Sequence[str] | None) -> None:
        """Make every entry of these groups (None: of every group) unreachable."""
        ...

    async def close(self) -> None:
        """Release what the store holds open."""
        ...
