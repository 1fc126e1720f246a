"""Rate limiting: policies and verdicts, in-process and Redis counters, and the fallback."""

from bazaar.gateway.ratelimit.fallback import FallbackRateLimiter
from bazaar.gateway.ratelimit.key import safe_key
from bazaar.gateway.ratelimit.memory import MemoryRateLimiter
from bazaar.gateway.ratelimit.policy import Decision, Policy, RateLimiter, Verdict
from bazaar.gateway.ratelimit.redis import RedisRateLimiter

__all__ = [
    "Decision",
    "FallbackRateLimiter",
    "MemoryRateLimiter",
    "Policy",
    "RateLimiter",
    "RedisRateLimiter",
    "Verdict",
    "safe_key",
]
