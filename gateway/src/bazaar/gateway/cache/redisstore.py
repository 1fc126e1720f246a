"""The Redis store, shared by every gateway replica.

Invalidation without scanning: each group (the lists, one product) has a generation key
holding a token, and so has the cache as a whole; an entry is stored under the tokens its
lookup saw (its era), so an invalidation is one SET of new tokens and every entry of the
old ones becomes unreachable (they expire with their TTL). Tokens are Redis's clock plus a
counter, never reused, so a generation key that expired or was evicted can never bring an
older entry back. An answer is stored only if the era is still current (a script compares
them atomically), so an answer fetched before an invalidation is never stored after it.
Lookups only read: a generation that does not exist yet is created by the first store that
needs it (in the same script), so reads of made-up products leave nothing in Redis (whose
eviction would otherwise take the rate limiter's counters first, volatile-ttl). Entries
expire with their remaining freshness; their age is read back from their TTL, so replicas'
clocks never matter. The scripts build key names from their arguments: like the
rate limiter, this needs a standalone Redis, not a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio

from bazaar.gateway.cache.entry import Entry
from bazaar.gateway.cache.key import Target
from bazaar.gateway.cache.pipelined import PipelinedScripts, Script
from bazaar.gateway.cache.store import Found, Ticket

# KEYS: the whole cache's generation, the group's. ARGV: the entries' prefix, the target's
# key. Returns the era (a missing generation as ''), then (if stored) the entry's remaining
# ms and its value, separated by newlines. Writes nothing: a lookup of a made-up product
# leaves no key behind.
_LOOKUP = Script(
    b"""
local whole = redis.call('GET', KEYS[1]) or ''
local group = redis.call('GET', KEYS[2]) or ''
local era = whole .. '|' .. group
if whole == '' or group == '' then return era end
local entry = ARGV[1] .. era .. ':' .. ARGV[2]
local value = redis.call('GET', entry)
if not value then return era end
return era .. '\\n' .. redis.call('PTTL', entry) .. '\\n' .. value
"""
)
# KEYS: as for _LOOKUP, then the token counter. ARGV: prefix, key, generation lifetime, the
# whole and the group token the lookup saw ('' if missing), the entry's TTL in ms, its
# value. Returns 1 if stored, 0 if a generation has changed since the lookup. A generation
# still missing is created here, with a new token, so that lookups never write.
_STORE = Script(
    b"""
local seen = {ARGV[4], ARGV[5]}
local tokens = {}
for i = 1, 2 do
  tokens[i] = redis.call('GET', KEYS[i]) or ''
  if tokens[i] ~= seen[i] then return 0 end
end
for i = 1, 2 do
  if tokens[i] == '' then
    local now = redis.call('TIME')
    tokens[i] = now[1] .. '.' .. now[2] .. '.' .. redis.call('INCR', KEYS[3])
  end
  redis.call('SET', KEYS[i], tokens[i], 'EX', ARGV[3])
end
local entry = ARGV[1] .. tokens[1] .. '|' .. tokens[2] .. ':' .. ARGV[2]
redis.call('SET', entry, ARGV[7], 'PX', ARGV[6])
return 1
"""
)
# KEYS: an entry that cannot be read.
_FORGET = Script(b"return redis.call('DEL', KEYS[1])")
# KEYS: the token counter, then the generations to renew. ARGV: their lifetime.
_DROP = Script(
    b"""
local now = redis.call('TIME')
local token = now[1] .. '.' .. now[2] .. '.' .. redis.call('INCR', KEYS[1])
for i = 2, #KEYS do redis.call('SET', KEYS[i], token, 'EX', ARGV[1]) end
return #KEYS - 1
"""
)


#: The format of the entries' values (`Entry.encode`), part of their keys: gateways of
#: another format (a rolling upgrade) keep their entries apart and never read each other's.
#: Generations are shared: a write through any gateway invalidates every one's entries.
ENTRY_FORMAT = 1


class RedisStore:
    """Entries in Redis under `prefix`; generations live `generation_seconds` (more than
    any entry's TTL) after their last use."""

    def __init__(
        self, client: redis.asyncio.Redis, *, prefix: str, generation_seconds: int, timeout: float
    ) -> None:
        self._scripts = PipelinedScripts(client.connection_pool, timeout=timeout)
        self._entries = f"{prefix}v{ENTRY_FORMAT}:e:".encode()
        self._whole = f"{prefix}g".encode()
        self._group = f"{prefix}g:"
        self._counter = f"{prefix}seq".encode()
        self._keep = b"%d" % generation_seconds

    def _keys(self, group: str) -> list[bytes]:
        return [self._whole, (self._group + group).encode()]

    async def lookup(self, target: Target) -> tuple[Ticket, Found | None]:
        """The fresh entry of the target, if any, and the ticket a later `store` needs."""
        reply = await self._scripts.call(
            _LOOKUP, self._keys(target.group), [self._entries, target.key.encode()]
        )
        if not isinstance(reply, bytes):
            raise ValueError(f"unexpected cache lookup answer: {reply!r:.100}")
        era, _, rest = reply.partition(b"\n")
        ticket = Ticket(era.decode())
        if not rest:
            return ticket, None
        remaining_ms, _, value = rest.partition(b"\n")
        try:
            entry = Entry.decode(value)
            remaining = int(remaining_ms) / 1000
        except ValueError:  # not an entry this gateway wrote: a miss, not a Redis failure
            name = self._entries + era + b":" + target.key.encode()
            await self._scripts.call(_FORGET, [name], [])
            return ticket, None
        return ticket, Found(entry, entry.lifetime - remaining)

    async def store(self, target: Target, ticket: Ticket, entry: Entry, age: float) -> bool:
        """Keep the entry under the ticket's era if it is still the current one."""
        remaining_ms = int((entry.lifetime - age) * 1000)
        if remaining_ms <= 0:
            return False
        whole, _, group = ticket.era.partition("|")
        reply = await self._scripts.call(
            _STORE,
            [*self._keys(target.group), self._counter],
            [
                self._entries,
                target.key.encode(),
                self._keep,
                whole.encode(),
                group.encode(),
                b"%d" % remaining_ms,
                entry.encode(),
            ],
        )
        return reply == 1

    async def drop(self, groups: Sequence[str] | None) -> None:
        """New generations for the groups (None: for the whole cache)."""
        names = [self._whole] if groups is None else [(self._group + g).encode() for g in groups]
        await self._scripts.call(_DROP, [self._counter, *names], [self._keep])

    async def close(self) -> None:
        """Finish the batches under way and give the kept connections back."""
        await self._scripts.close()
