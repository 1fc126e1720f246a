"""Rate limiting: policies and verdicts, in-process and Redis counters, the fallback, and
whom a token request is about."""

from bazaar.gateway.ratelimit.fallback import FallbackRateLimiter
from bazaar.gateway.ratelimit.key import safe_key
from bazaar.gateway.ratelimit.memory import MemoryRateLimiter
from bazaar.gateway.ratelimit.policy import Decision, Policy, RateLimiter, Verdict
from bazaar.gateway.ratelimit.redis import RedisRateLimiter, connect_redis
from bazaar.gateway.ratelimit.tokenkey import token_subject

__all__ = [
    "Decision",
    "FallbackRateLimiter",
    "MemoryRateLimiter",
    "Policy",
    "RateLimiter",
    "RedisRateLimiter",
    "Verdict",
    "connect_redis",
    "safe_key",
    "token_subject",
]
