"""The pure rules of signing keys: who signs, who is published, how a rotation retires."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bazaar.auth.domain.keys import (
    KeyRecord,
    published_at,
    retire_predecessors,
    rotation_schedule,
    signing_key_at,
)

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
TTL = timedelta(minutes=15)
LEEWAY = timedelta(seconds=20)


def key(kid: str, activates_at: datetime, **fields: object) -> KeyRecord:
    record = KeyRecord(
        kid=kid,
        alg="ES256",
        public_jwk={"kty": "EC", "kid": kid},
        activates_at=activates_at,
        retired_at=None,
        unpublish_at=None,
        created_at=activates_at,
    )
    return replace(record, **fields)  # type: ignore[arg-type]


def test_no_key_signs_when_there_is_none() -> None:
    assert signing_key_at([], T0) is None


def test_the_latest_activated_key_signs() -> None:
    keys = [key("old", T0 - 10 * MINUTE), key("new", T0 - MINUTE)]
    assert signing_key_at(keys, T0).kid == "new"  # type: ignore[union-attr]


def test_a_key_does_not_sign_before_it_activates() -> None:
    keys = [key("old", T0 - MINUTE), key("next", T0 + MINUTE)]
    assert signing_key_at(keys, T0).kid == "old"  # type: ignore[union-attr]
    assert signing_key_at(keys, T0 + MINUTE).kid == "next"  # type: ignore[union-attr]


def test_a_key_activating_exactly_now_signs() -> None:
    keys = [key("old", T0 - MINUTE, retired_at=T0), key("next", T0)]
    assert signing_key_at(keys, T0).kid == "next"  # type: ignore[union-attr]


def test_a_retired_key_never_signs_even_if_it_activates_later() -> None:
    # Rotated in with a long delay, then superseded by an immediate rotation.
    keys = [
        key("first", T0 - 60 * MINUTE, retired_at=T0),
        key("pending", T0 + 10 * MINUTE, retired_at=T0, created_at=T0 - MINUTE),
        key("urgent", T0, created_at=T0),
    ]
    assert signing_key_at(keys, T0 + 20 * MINUTE).kid == "urgent"  # type: ignore[union-attr]


def test_keys_without_an_unpublish_time_are_published() -> None:
    keys = [key("a", T0), key("b", T0 + MINUTE)]
    assert [k.kid for k in published_at(keys, T0)] == ["a", "b"]


def test_a_key_leaves_the_jwks_at_its_unpublish_time() -> None:
    keys = [key("old", T0 - 30 * MINUTE, retired_at=T0, unpublish_at=T0 + TTL), key("new", T0)]
    assert [k.kid for k in published_at(keys, T0 + TTL - MINUTE)] == ["old", "new"]
    assert [k.kid for k in published_at(keys, T0 + TTL)] == ["new"]


def test_a_pending_key_is_published_before_it_signs() -> None:
    keys = [key("now", T0 - MINUTE), key("next", T0 + 10 * MINUTE)]
    assert [k.kid for k in published_at(keys, T0)] == ["now", "next"]


def test_the_schedule_retires_predecessors_when_the_new_key_activates() -> None:
    schedule = rotation_schedule(T0, 10 * MINUTE, TTL, LEEWAY)
    assert schedule == (T0 + 10 * MINUTE, T0 + 10 * MINUTE, T0 + 10 * MINUTE + TTL + LEEWAY)
    assert schedule.grace == TTL + LEEWAY


def test_an_immediate_rotation_still_keeps_the_old_key_published_for_its_tokens() -> None:
    activates, retired, unpublish = rotation_schedule(T0, timedelta(0), TTL, LEEWAY)
    assert activates == retired == T0
    assert unpublish == T0 + TTL + LEEWAY


def test_a_negative_activation_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="activate_in"):
        rotation_schedule(T0, -MINUTE, TTL, LEEWAY)


def test_a_rotation_retires_the_signing_key_at_the_new_keys_activation() -> None:
    schedule = rotation_schedule(T0, 10 * MINUTE, TTL, LEEWAY)
    [changed] = retire_predecessors([key("old", T0 - 60 * MINUTE)], schedule, T0)
    assert changed.retired_at == T0 + 10 * MINUTE
    assert changed.unpublish_at == T0 + 10 * MINUTE + TTL + LEEWAY


def test_a_rotation_never_moves_an_earlier_retirement_later() -> None:
    first = rotation_schedule(T0, 10 * MINUTE, TTL, LEEWAY)
    old = key("old", T0 - 60 * MINUTE, retired_at=first.retired_at, unpublish_at=first.unpublish_at)
    pending = key("pending", first.activates_at, created_at=T0)
    later = rotation_schedule(T0 + MINUTE, 30 * MINUTE, TTL, LEEWAY)
    changed = {k.kid: k for k in retire_predecessors([old, pending], later, T0 + MINUTE)}
    assert "old" not in changed  # already due to leave sooner, and that stays so
    assert changed["pending"].retired_at == later.retired_at
    assert changed["pending"].unpublish_at == later.unpublish_at


def test_an_urgent_rotation_brings_an_earlier_retirement_forward() -> None:
    first = rotation_schedule(T0, 10 * MINUTE, TTL, LEEWAY)
    old = key("old", T0 - 60 * MINUTE, retired_at=first.retired_at, unpublish_at=first.unpublish_at)
    urgent = rotation_schedule(T0 + MINUTE, timedelta(0), TTL, LEEWAY)
    [changed] = retire_predecessors([old], urgent, T0 + MINUTE)
    assert changed.retired_at == T0 + MINUTE
    assert changed.unpublish_at == T0 + MINUTE + TTL + LEEWAY


def test_a_retired_key_stays_published_after_it_stops_signing() -> None:
    schedule = rotation_schedule(T0, timedelta(0), TTL, LEEWAY)
    [changed] = retire_predecessors([key("old", T0 - MINUTE)], schedule, T0)
    assert changed.unpublish_at is not None and changed.retired_at is not None
    assert changed.unpublish_at > changed.retired_at


def test_a_rotation_leaves_unpublished_keys_alone() -> None:
    gone = key("gone", T0 - 90 * MINUTE, retired_at=T0 - 60 * MINUTE, unpublish_at=T0 - MINUTE)
    schedule = rotation_schedule(T0, 10 * MINUTE, TTL, LEEWAY)
    assert retire_predecessors([gone], schedule, T0) == []
