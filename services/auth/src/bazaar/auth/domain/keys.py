"""Signing keys over time: which key signs, which are published, and how a rotation retires.

A rotated-in key is published at once but signs only from `activates_at`, so every verifier
can fetch it before the first token it signs appears. Its predecessors sign until that same
instant and stay published until the last token they could have signed has expired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A signing key as stored, without its private half."""

    kid: str
    alg: str
    public_jwk: Mapping[str, Any]
    activates_at: datetime
    retired_at: datetime | None
    unpublish_at: datetime | None
    created_at: datetime

    def signs_at(self, now: datetime) -> bool:
        """Whether the key may sign at `now`: activated and not yet retired."""
        return self.activates_at <= now and (self.retired_at is None or now < self.retired_at)

    def is_published_at(self, now: datetime) -> bool:
        """Whether the key belongs in the JWKS at `now`."""
        return self.unpublish_at is None or now < self.unpublish_at


class RotationSchedule(NamedTuple):
    """When a rotated-in key signs, and when its predecessors stop signing and leave the JWKS."""

    activates_at: datetime
    retired_at: datetime
    unpublish_at: datetime

    @property
    def grace(self) -> timedelta:
        """How long a key stays published after it stops signing."""
        return self.unpublish_at - self.retired_at


def signing_key_at(keys: Iterable[KeyRecord], now: datetime) -> KeyRecord | None:
    """Return the key that signs at `now`: the latest activated one not retired; else None."""
    candidates = [key for key in keys if key.signs_at(now)]
    if not candidates:
        return None
    return max(candidates, key=lambda key: (key.activates_at, key.created_at, key.kid))


def published_at(keys: Iterable[KeyRecord], now: datetime) -> list[KeyRecord]:
    """Return the keys a JWKS shows at `now`, oldest activation first."""
    return sorted(
        (key for key in keys if key.is_published_at(now)),
        key=lambda key: (key.activates_at, key.created_at, key.kid),
    )


def rotation_schedule(
    now: datetime, activate_in: timedelta, token_ttl: timedelta, leeway: timedelta
) -> RotationSchedule:
    """Schedule a rotation started at `now`: the new key signs after `activate_in`."""
    if activate_in < timedelta(0):
        raise ValueError("activate_in must not be negative")
    activates_at = now + activate_in
    # A token signed just before the switch lives `token_ttl`, and verifiers accept it
    # `leeway` longer still: only then can nobody present a token of the old key.
    return RotationSchedule(activates_at, activates_at, activates_at + token_ttl + leeway)


def retire_predecessors(
    keys: Iterable[KeyRecord], schedule: RotationSchedule, now: datetime
) -> list[KeyRecord]:
    """Return the published keys whose retirement the rotation changes, as changed.

    A key already due to retire earlier keeps that earlier time (another rotation's key takes
    over then); its unpublication follows its retirement by the schedule's grace, and an
    unchanged retirement never loses publication time it was promised.
    """
    changed: list[KeyRecord] = []
    for key in keys:
        if not key.is_published_at(now):
            continue  # gone from the JWKS already; never bring a key back
        retired_at = schedule.retired_at
        if key.retired_at is not None:
            retired_at = min(key.retired_at, retired_at)
        unpublish_at = retired_at + schedule.grace
        if key.retired_at == retired_at and key.unpublish_at is not None:
            unpublish_at = max(key.unpublish_at, unpublish_at)
        if (retired_at, unpublish_at) != (key.retired_at, key.unpublish_at):
            changed.append(replace(key, retired_at=retired_at, unpublish_at=unpublish_at))
    return changed
