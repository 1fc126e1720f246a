"""The values the idempotency store deals in: scope, stored response, outcome, fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class IdempotencyScope:
    """Who sent the key and to what: keys are unique per (principal, method, route template)."""

    principal: str
    method: str
    route: str


@dataclass(frozen=True)
class StoredResponse:
    """An answer as it is stored and replayed: status, JSON body and headers."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """The answer of an idempotent request, and whether it is a replay of a stored one."""

    response: StoredResponse
    replayed: bool


def request_fingerprint(body: Any) -> str:
    """The sha256 hex digest of `body` as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ClaimWith:
    """A first effect written in the claim's own statement: one round trip, one commit.

    `sql` is one data-modifying statement (with RETURNING) that reads the CTE `claim`, the
    claimed row (`id`), so it writes only when the key is newly claimed; its parameters are
    numbered from `$7` (the claim's are `$1`-`$6`) and must be cast, since nothing infers
    their types. `landed` gets the row it returned (None when it wrote nothing). A replay,
    a key in use and a takeover never run it: `prepare` must then do the work itself.
    """

    sql: str
    args: tuple[Any, ...]
    landed: Callable[[Mapping[str, Any] | None], None]
