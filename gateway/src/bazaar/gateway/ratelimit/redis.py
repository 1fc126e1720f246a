"""Fixed-window counters in Redis, shared by every gateway replica.

One Lua script decides a request: it reads the Redis server's clock (`TIME`), so replicas
with skewed clocks still agree on the window, and for each check it INCRs
`<prefix><policy>:<key>:<window start>` and sets the counter to expire one second after its
window ends. Scripts run atomically, so concurrent replicas can never overshoot a quota.
The script builds its counter names from the names it is given plus the window start, so
it needs a standalone Redis (or a cluster where all of them hash to one slot); Redis >= 5
replicates the script's effects, which `TIME` requires.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio

from bazaar.gateway.ratelimit.key import safe_key
from bazaar.gateway.ratelimit.policy import Decision, Policy, Verdict

# KEYS[i]: counter name without the window start; ARGV[i]: that policy's window in seconds.
# Returns, per check, the count including this request and the seconds left in the window.
_HIT = """
local now = tonumber(redis.call('TIME')[1])
local answer = {}
for i, base in ipairs(KEYS) do
  local window = tonumber(ARGV[i])
  local start = now - now % window
  local counter = base .. ':' .. start
  local count = redis.call('INCR', counter)
  if count == 1 then
    redis.call('EXPIREAT', counter, start + window + 1)
  end
  answer[2 * i - 1] = count
  answer[2 * i] = start + window - now
end
return answer
"""


class RedisRateLimiter:
    """Count requests per (policy, key) in Redis, one atomic script call per decision."""

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str) -> None:
        self._prefix = prefix
        self._script = client.register_script(_HIT)

    def counter_name(self, policy: Policy, key: str) -> str:
        """Return the counter's name without its window start (the script appends it)."""
        return f"{self._prefix}{policy.name}:{safe_key(key)}"

    async def hit(self, checks: Sequence[tuple[Policy, str]]) -> Verdict:
        """Count one request against every (policy, key) and return the verdict."""
        if not checks:
            return Verdict([])
        names = [self.counter_name(policy, key) for policy, key in checks]
        windows = [policy.window for policy, _ in checks]
        answer = await self._script(keys=names, args=windows)
        return Verdict(
            [
                Decision.counted(policy, int(answer[2 * i]), int(answer[2 * i + 1]))
                for i, (policy, _) in enumerate(checks)
            ]
        )
