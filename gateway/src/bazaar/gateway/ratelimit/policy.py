"""Rate-limit policies, per-policy decisions and the verdict, with their HTTP headers.

Headers follow draft-ietf-httpapi-ratelimit-headers: each policy is a structured-field item
named by a string, `"user";q=1200;w=60`, and its state `"user";r=598;t=41`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Names end up inside sf-strings and Redis keys: a ":" would make `name:key` ambiguous.
_POLICY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Policy:
    """At most `quota` requests per fixed `window` of seconds, aligned to the epoch."""

    name: str
    quota: int
    window: int

    def __post_init__(self) -> None:
        if not _POLICY_NAME.fullmatch(self.name):
            raise ValueError(f"policy name {self.name!r} must match {_POLICY_NAME.pattern}")
        if self.quota < 0 or self.window < 1:
            raise ValueError(f"policy {self.name!r} needs quota >= 0 and window >= 1")

    def header_value(self) -> str:
        """Render the policy as a `RateLimit-Policy` item."""
        return f'"{self.name}";q={self.quota};w={self.window}'

    def window_start(self, now: float) -> int:
        """Return the epoch second at which the window holding `now` began."""
        return math.floor(now / self.window) * self.window


@dataclass(frozen=True, slots=True)
class Decision:
    """One policy's answer: quota left after this request and seconds until the window ends.

    `count` is the number of requests counted in the window, this one included; the request
    is allowed while it is within the quota.
    """

    policy: Policy
    remaining: int
    reset: int
    count: int

    @classmethod
    def counted(cls, policy: Policy, count: int, reset: int) -> Decision:
        """Build the decision for the `count`-th request of a window ending in `reset` s."""
        return cls(policy, max(0, policy.quota - count), max(1, reset), count)

    @property
    def allowed(self) -> bool:
        """Answer whether this request fits within the policy's quota."""
        return self.count <= self.policy.quota

    def item(self) -> str:
        """Render the decision as a `RateLimit` item."""
        return f'"{self.policy.name}";r={self.remaining};t={self.reset}'


@dataclass(slots=True)
class Verdict:
    """Every policy's decision for one request; it is allowed only if all of them allow it."""

    decisions: list[Decision]

    @property
    def allowed(self) -> bool:
        """Answer whether every policy allows the request."""
        for decision in self.decisions:  # a loop: cheaper than all() over a generator
            if not decision.allowed:
                return False
        return True

    @property
    def retry_after(self) -> int:
        """Seconds until every denying policy has a new window (0 when allowed)."""
        return max((d.reset for d in self.decisions if not d.allowed), default=0)

    def headers(self) -> dict[str, str]:
        """Return the `RateLimit-Policy` and `RateLimit` headers (none without policies)."""
        if not self.decisions:
            return {}
        if len(self.decisions) == 1:  # the usual case, without the joins
            only = self.decisions[0]
            return {"RateLimit-Policy": only.policy.header_value(), "RateLimit": only.item()}
        return {
            "RateLimit-Policy": ", ".join(d.policy.header_value() for d in self.decisions),
            "RateLimit": ", ".join(d.item() for d in self.decisions),
        }


class RateLimiter(Protocol):
    """Counts a request against (policy, key) pairs and decides whether it may pass."""

    async def hit(self, checks: Sequence[tuple[Policy, str]]) -> Verdict:
        """Count one request against every (policy, key) and return the verdict."""
        ...
