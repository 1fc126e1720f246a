"""Emails, token digests, refresh-token state and the login back-off (pure rules)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bazaar.auth.domain.model import (
    RefreshToken,
    email_key,
    is_valid_email,
    new_refresh_token,
    secret_matches,
    token_digest,
)
from bazaar.auth.domain.throttle import wait_after


@pytest.mark.parametrize(
    "email",
    ["ada@example.com", "Ada.Lovelace+tag@sub.example.co.uk", "a@b.c", "l" * 64 + "@example.com"],
)
def test_plausible_addresses_are_valid(email: str) -> None:
    assert is_valid_email(email)


@pytest.mark.parametrize(
    "email",
    [
        pytest.param("ada.example.com", id="no at sign"),
        pytest.param("ada @example.com", id="space"),
        pytest.param("ada@@example.com", id="two at signs"),
        pytest.param("ada@home@example.com", id="two at signs apart"),
        pytest.param("ada@example", id="no dot in domain"),
        pytest.param("ada@example.com\n", id="trailing newline"),
        pytest.param("\nada@example.com", id="leading newline"),
        pytest.param("l" * 65 + "@example.com", id="local part over 64"),
        pytest.param("a" * 250 + "@example.com", id="over 254"),
        pytest.param("", id="empty"),
    ],
)
def test_implausible_addresses_are_invalid(email: str) -> None:
    assert not is_valid_email(email)


def test_the_email_key_ignores_case_and_surrounding_spaces() -> None:
    assert email_key("  Ada@Example.COM ") == "ada@example.com"


def test_a_token_digest_is_sha256_sized_stable_and_distinct() -> None:
    assert len(token_digest("a")) == 32
    assert token_digest("a") == token_digest("a")
    assert token_digest("a") != token_digest("b")
    assert b"a-secret" not in token_digest("a-secret")


def test_a_secret_matches_only_its_own_digest() -> None:
    stored = token_digest("the secret").hex()

    assert secret_matches("the secret", stored)
    assert not secret_matches("the secret ", stored)
    assert not secret_matches("", stored)


def test_refresh_tokens_are_long_random_and_url_safe() -> None:
    tokens = {new_refresh_token() for _ in range(50)}

    assert len(tokens) == 50
    for token in tokens:
        assert len(token) >= 43  # 256 bits
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)


def _refresh(used: bool = False, revoked: bool = False) -> RefreshToken:
    now = datetime.now(UTC)
    return RefreshToken(
        uuid.uuid4(),
        uuid.uuid4(),
        uuid.uuid4(),
        "bazaar-web",
        "catalog:read",
        now + timedelta(days=1),
        now if used else None,
        now if revoked else None,
    )


def test_a_used_or_revoked_refresh_token_is_spent() -> None:
    assert not _refresh().is_spent()
    assert _refresh(used=True).is_spent()
    assert _refresh(revoked=True).is_spent()


def test_no_wait_before_the_threshold() -> None:
    assert wait_after(1, threshold=5, max_seconds=900) is None
    assert wait_after(4, threshold=5, max_seconds=900) is None


def test_the_wait_starts_at_the_threshold_and_doubles() -> None:
    waits = [wait_after(n, threshold=5, max_seconds=900) for n in range(5, 9)]

    assert waits == [timedelta(seconds=s) for s in (1, 2, 4, 8)]


def test_the_wait_is_capped() -> None:
    assert wait_after(100, threshold=5, max_seconds=900) == timedelta(seconds=900)
    assert wait_after(10_000, threshold=5, max_seconds=900) == timedelta(seconds=900)
